"""``python -m phyllodes.data.sources.dicom``: the import-dicom command."""

import sys

from phyllodes.data.sources.dicom.cli import main

sys.exit(main())
