"""Print the e2e timings (each up and destroy) in pytest's summary, where CI shows them
even when output capture hides the tests' own prints."""

TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("e2e timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)
