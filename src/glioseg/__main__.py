from glioseg.cli import main

raise SystemExit(main())
