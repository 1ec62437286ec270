"""The wire between the broker (host side) and the job process (inside the sandbox):
framing, the shared-memory arena, and the runtime's fixed messages. Both sides import it;
it imports only the protocol, stdlib and numpy."""
