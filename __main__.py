"""dockyard: read the stack's configuration, create its hosts, bring the platform up.
The program is components/program.py, which the tests run on mocks too."""
from components.program import main

main()
