"""`python -m hf_mtl.bench SUITE [flags]`, the same as `hf-mtl bench SUITE [flags]`."""

import sys

from . import bench

sys.exit(bench(sys.argv[1:]))
