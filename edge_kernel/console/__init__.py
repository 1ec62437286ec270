"""The hospital's web console (``rapha-edge console``): ``app.py`` serves it, ``views.py``
reads what it shows, ``pages.py`` renders it."""
