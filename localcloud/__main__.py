from localcloud.vm import main

raise SystemExit(main())
