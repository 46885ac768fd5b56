import sys

from vitsearch.search.cli.main import main

sys.exit(main())
