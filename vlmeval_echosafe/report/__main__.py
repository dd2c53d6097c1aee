import sys

from .cli import report_main

sys.exit(report_main())
