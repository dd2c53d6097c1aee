"""VLMEvalKit's run.py with vlmeval-echosafe registered: same flags, e.g.

python run.py --data MMSafetyBenchPP_Demo --model TinyQwen2VL --judge rule
"""

import sys

from vlmeval_echosafe.launcher import main

if __name__ == "__main__":
    sys.exit(main())
