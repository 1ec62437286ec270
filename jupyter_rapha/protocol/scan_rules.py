"""The scanner's rule tables: which modules, attributes and calls count as network- or
escape-capable, and the message that tells a researcher what to change.

Kept as data apart from the AST walk so that a hospital reviewer can read what is
flagged without reading a visitor. The scan is defence in depth: the sandbox (S1) is
what actually stops a job reaching the network, whatever slips past these tables.
"""

from __future__ import annotations

import re

# Modules whose only reason to be in a training cell is talking to another machine.
NETWORK_MODULES = frozenset({
    "socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "grpc",
    "websockets", "websocket", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib",
    "nntplib", "paramiko", "socketserver", "xmlrpc", "asyncssh", "pycurl", "zmq",
})

# Modules that start processes, load native code or open raw channels: each is a way
# out of the Python interpreter the sandbox profile was written for.
ESCAPE_MODULES = frozenset({
    "subprocess", "_posixsubprocess", "multiprocessing.connection", "ctypes", "_ctypes",
    "cffi", "pty", "posix", "nt", "runpy", "code", "codeop",
})

# Stdlib and runtime modules a training cell plausibly needs. A hospital replaces this
# with its edge's own runtime allowlist; an import outside it is reported.
DEFAULT_ALLOWED_MODULES = frozenset({
    "__future__", "abc", "array", "base64", "bisect", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "enum", "fractions", "functools", "gc",
    "hashlib", "heapq", "importlib", "io", "itertools", "json", "logging", "math",
    "monai", "numbers", "numpy", "operator", "os", "pathlib", "random", "rapha", "re", "safetensors", "shutil",
    "statistics", "string", "struct", "sys", "textwrap", "time", "torch", "torchvision",
    "typing", "warnings",
})

# os-level process creation, whichever module name reaches it.
OS_EXEC = re.compile(r"^(os|posix|nt)\.(system|popen|exec\w*|spawn\w*|fork\w*|posix_spawn\w*)$")

# Attribute names that, reached through another module (``torch.hub``, ``np.ctypeslib``,
# ``shutil.os``, ``os.__dict__``), lead to the network, native code or the interpreter's
# own import machinery.
REACH_ATTRS = frozenset({
    "socket", "ssl", "subprocess", "_posixsubprocess", "ctypes", "ctypeslib", "cffi",
    "urllib", "urllib3", "requests", "http", "hub", "model_zoo", "cpp_extension",
    "load_library", "download_url", "download_url_to_file", "urlopen", "urlretrieve",
    "DataSource", "system", "popen", "os", "sys", "builtins", "importlib",
    "_getframe", "__dict__", "__builtins__", "__globals__", "__subclasses__", "__code__",
    "__loader__", "__spec__", "__import__", "__bases__", "__mro__", "f_globals", "f_back",
})

# Names whose bare use already reaches the interpreter's internals.
DANGEROUS_NAMES = frozenset({"__builtins__", "__loader__", "__spec__"})
# Pairs of adjacent attributes that reach every loaded module (``sys.modules["os"]``).
REACH_PAIRS = frozenset({("sys", "modules")})

DYNAMIC_CODE = frozenset({"builtins.exec", "builtins.eval", "builtins.compile"})
DYNAMIC_IMPORT = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__",
                            "importlib.reload"})
REFLECTION = frozenset({"builtins.getattr", "builtins.setattr", "builtins.delattr"})
NAMESPACE_CALLS = frozenset({"builtins.globals", "builtins.locals", "builtins.vars"})

# Deserialisers that run code chosen by whoever wrote the bytes.
PICKLE_LOADS = frozenset({
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "_pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
    "cloudpickle.load", "cloudpickle.loads", "joblib.load", "marshal.load", "marshal.loads",
    "shelve.open", "pandas.read_pickle", "jsonpickle.decode",
})
WEIGHTS_ONLY_LOADS = frozenset({"torch.load", "torch.serialization.load"})

# Decoders whose output, fed to exec/eval/compile, hides the code from review.
DECODERS = frozenset({
    "b64decode", "b32decode", "b16decode", "a85decode", "b85decode", "urlsafe_b64decode",
    "decodebytes", "decodestring", "unhexlify", "a2b_base64", "a2b_hex", "fromhex",
    "decompress", "decode", "rot13",
})

FILE_WRITERS = frozenset({"write_text", "write_bytes", "touch", "mkdir", "unlink", "rename",
                          "replace", "rmdir", "symlink_to", "hardlink_to", "chmod"})
SHUTIL_WRITERS = re.compile(r"^shutil\.(copy\w*|move|rmtree|make_archive|unpack_archive|chown)$")
OS_WRITERS = re.compile(r"^os\.(remove|unlink|rename|renames|replace|rmdir|removedirs|mkdir|"
                        r"makedirs|symlink|link|chmod|chown|truncate|open|chdir)$")

HIGH, MEDIUM, LOW = "high", "medium", "low"

ADVICE = {
    "syntax-error": "fix the syntax error; the edge runs only code that parses",
    "net-import": "remove the import; jobs run without network, read data through rapha.loader()",
    "escape-import": "remove the import; jobs cannot start processes or load native code",
    "os-exec": "remove the call; jobs cannot start other programs",
    "dynamic-code": "write the code out directly instead of building it at run time",
    "reach-through": "use the module's public training API instead of reaching its internals",
    "pickle-load": "load tensors with safetensors or torch.load(..., weights_only=True)",
    "write-outside-job": "write only relative paths inside the job directory (rapha.save() for weights)",
    "module-not-allowed": "use modules on the edge's runtime allowlist or ask the hospital to add it",
    "obfuscation": "spell names and code out literally so reviewers can read what runs",
    "decode-exec": "do not execute decoded strings; ship the code itself in the cell",
}
