import sys

from experiments.gpu.kit import main

sys.exit(main())
