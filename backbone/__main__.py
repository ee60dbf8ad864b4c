from backbone.cli import main
import sys

sys.exit(main())
