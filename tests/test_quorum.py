"""The refusal, before any change, to remove half of the swarm's managers or more at once."""
import pulumi
import pytest

from components.config import ConfigError, parse_config
from components.quorum import MANAGER_COUNT_OUTPUT, check_manager_change, guard_manager_change
from tests.harness import BASE_CONFIG, Mocks, RecordingMonitor


@pytest.mark.parametrize("previous,requested", [(None, 7), (3, 3), (3, 5), (5, 3), (7, 5), (1, 3)])
def test_keeping_a_majority_of_the_managers_passes(previous, requested):
    check_manager_change(previous, requested)


@pytest.mark.parametrize("previous,requested,advice", [
    (3, 1, "no smaller odd count keeps a majority"),
    (5, 1, "lower it to 3 in this update"),
    (7, 3, "lower it to 5 in this update"),
    (7, 1, "lower it to 5 in this update"),
])
def test_losing_the_majority_in_one_update_is_refused_with_advice(previous, requested, advice):
    with pytest.raises(ConfigError) as error:
        check_manager_change(previous, requested)
    message = str(error.value)
    assert f"dockyard:managers: going from {previous} to {requested} managers" in message
    assert advice in message and "dockyard:allowManagerMajorityLoss" in message


def test_the_operator_can_allow_it_after_checking():
    check_manager_change(3, 1, forced=True)
    config = parse_config("s", {**BASE_CONFIG, "tier": "small", "managers": "1", "allowManagerMajorityLoss": "true"})
    assert config.allow_manager_majority_loss is True


class PreviousStack(Mocks):
    """A stack whose last update exported `previous` managers."""

    def __init__(self, previous):
        super().__init__("10.0.0.0/8")
        self.previous = previous
        self.references = []

    def new_resource(self, args):
        if args.typ == "pulumi:pulumi:StackReference":
            self.references.append(args.inputs["name"])
            outputs = {} if self.previous is None else {MANAGER_COUNT_OUTPUT: self.previous}
            return args.name, {"name": args.inputs["name"], "outputs": outputs, "secretOutputNames": []}
        return super().new_resource(args)


def guarded(previous, requested):
    mocks = PreviousStack(previous)
    pulumi.runtime.set_mocks(mocks, project="dockyard", stack="small", preview=True, monitor=RecordingMonitor(mocks))

    @pulumi.runtime.test
    def program():
        return guard_manager_change(requested, False)

    program()
    return mocks


def test_the_guard_reads_the_stacks_own_last_outputs():
    mocks = guarded(5, 3)
    assert mocks.references == ["organization/dockyard/small"]
    guarded(None, 1)  # a new stack has nothing to compare with


def test_the_guard_fails_the_preview_when_the_majority_would_go():
    with pytest.raises(ConfigError, match="going from 5 to 1 managers"):
        guarded(5, 1)
