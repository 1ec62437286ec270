"""How a job reaches its edges: the routing proxy (``EdgeProxy``: configured edges, their
verified catalogs, routing, signing, jobs), the catalog checks and the submission it takes.
The Jupyter server extension serves it over /rapha/api; with no server the kernel and
``rapha run`` run the same proxy in-process (``jupyter_rapha.gateways``)."""
