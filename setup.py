"""The compiled hot path: with Cython and a C compiler at build time (``pip install -e .``
or a wheel build), the modules in ``prefork/_compiled.py`` (``HOT``) become C extensions
beside their sources; without either, or with ``PREFORK_PURE=1`` set while building, the
package is pure Python. Either way it runs the same code: the sources are the truth, the
``.pxd`` files beside some of them only declare types for the compiler. At run time
``PREFORK_PURE=1`` imports the sources even where extensions were built
(``prefork/__init__.py``), and ``prefork-server --version`` says which is running."""

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "prefork"))
from _compiled import HOT  # noqa: E402  (the list only: importing prefork itself is not needed)


def extensions():
    if os.environ.get("PREFORK_PURE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("prefork: Cython is not installed: building the pure-Python package", file=sys.stderr)
        return []
    from setuptools import Extension

    exts = [Extension(name, [name.replace(".", "/") + ".py"], optional=True) for name in HOT]
    return cythonize(exts, compiler_directives={"language_level": 3, "binding": True,
                                                "annotation_typing": False},
                     quiet=True)


setup(ext_modules=extensions())
