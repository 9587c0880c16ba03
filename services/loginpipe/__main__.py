from loginpipe.cli import main

raise SystemExit(main())
