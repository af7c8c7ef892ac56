from skiplab.cli import main

raise SystemExit(main())
