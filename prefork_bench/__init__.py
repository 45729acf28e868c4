"""prefork-bench: the load tools for prefork, kept out of the server package.

The server package (``prefork``) never imports this one. The console script
``prefork-bench`` is ``prefork_bench.cli:main``; ``bench/*.py`` are thin
entry points over these modules.
"""
