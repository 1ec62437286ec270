import pytest

from jupyter_rapha.protocol.cellinfo import logged_metric_names
from jupyter_rapha.protocol.errors import BadInput


def test_metric_names_are_read_from_rapha_log_calls():
    code = "for e in range(3):\n    rapha.log(loss=1.0, epoch=e)\nrapha.log(accuracy=0.5)\nlogger.log(x=1)\n"
    assert logged_metric_names(code) == ("accuracy", "epoch", "loss")
    assert logged_metric_names("x = 1\n") == ()


@pytest.mark.parametrize("code", ["rapha.log(**values)\n", "def f(:\n"])
def test_unreadable_declarations_are_refused(code):
    with pytest.raises(BadInput):
        logged_metric_names(code)
