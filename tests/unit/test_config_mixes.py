"""One bad field never hides another problem of the same device (an operator's table of mixes).

Each row is two mistakes in one device, each reported when it is alone; `check` must name both
when they come together. A field error stops pydantic before a model's own rules (local_echo on
TCP, a word order on a one-register type) and a model rule failing drops the whole table, so the
rules across keys must run on the fields that were fine, not on whole models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_config import MINIMAL, problems

HEAD = MINIMAL[: MINIMAL.index("[[devices]]")]


def device(name: str, key: str, modbus: str, points: str, top: str = "") -> str:
    return (
        f'[[devices]]\nname = "{name}"\nproduct_key = "sp"\ndevice_key = "{key}"\n{top}\n'
        f"[devices.modbus]\n{modbus}\n{points}"
    )


TCP = 'host = "127.0.0.1"'
ONE_POINT = '[[devices.points]]\nid = "P"\naddress = 0\n'
OVERLAPPING = (
    '[[devices.points]]\nid = "Power"\naddress = 0\ntype = "float32"\n'
    '[[devices.points]]\nid = "Voltage"\naddress = 1\n'
)
SHORT = "interval_s 0.5 is shorter than one failing read"
ECHO = "local_echo is a serial adapter's: it needs transport = 'rtu'"


def on_ttys0(first: str, second: str) -> str:
    """Two devices on one serial line, each modbus table with more keys."""
    rtu = 'transport = "rtu"\nserial_port = "/dev/ttyS0"\n'
    return (
        HEAD
        + device("rtu-1", "d1", rtu + first, ONE_POINT)
        + device("rtu-2", "d2", rtu + second, ONE_POINT)
    )


def one_device(modbus: str, points: str = ONE_POINT, top: str = "") -> str:
    return HEAD + device("m1", "sd", modbus, points, top)


BAUD = "devices[1] (rtu-2).modbus.baudrate: 19200, but 'rtu-1' on the same line (rtu:/dev/ttyS0) has 9600"

# (config, problems each named by a line that starts with it)
MIXES: list[tuple[str, list[str]]] = [
    (  # a model rule failing on Voltage dropped it, and the overlap with it
        one_device(TCP, OVERLAPPING.replace("address = 1\n", 'address = 1\norder = "CDAB"\n')),
        [
            "devices[0] (m1): points 'Power' and 'Voltage' overlap in the holding table "
            "(registers 0-1 and 1-1)",
            "devices[0] (m1).points[1] (Voltage): order 'CDAB' swaps words, but a uint16",
        ],
    ),
    (  # held already (DeviceParts.timing): an unknown key beside timeout_s and retries
        one_device(TCP + "\ntimeout_s = 0.5\nretries = 1\nunitid = 3", top="interval_s = 0.5"),
        [f"devices[0] (m1): {SHORT}", "devices[0] (m1).modbus.unitid: unknown key"],
    ),
    (  # held already (DeviceParts.timing): the endpoint's own rule failing beside them
        one_device(TCP + "\nlocal_echo = true", top="interval_s = 0.5"),
        [f"devices[0] (m1): {SHORT}", f"devices[0] (m1).modbus: {ECHO}"],
    ),
    (  # the unknown key stopped pydantic before the endpoint's own rules
        one_device(TCP + "\nlocal_echo = true\nunitid = 3"),
        ["devices[0] (m1).modbus.unitid: unknown key", f"devices[0] (m1).modbus: {ECHO}"],
    ),
    (  # the broadcast unit_id dropped the endpoint, and with it the line it is on
        on_ttys0("baudrate = 9600", "baudrate = 19200\nunit_id = 0"),
        [BAUD, "devices[1] (rtu-2).modbus: unit_id 0 is the broadcast address"],
    ),
    (
        on_ttys0("baudrate = 9600", "baudrate = 19200\nparty = 1"),
        [BAUD, "devices[1] (rtu-2).modbus.party: unknown key"],
    ),
    (  # held already: a bad point type does not hide the overlap of two others
        one_device(TCP, OVERLAPPING + '[[devices.points]]\nid = "Q"\naddress = 7\ntype = "x"\n'),
        [
            "devices[0] (m1): points 'Power' and 'Voltage' overlap",
            "devices[0] (m1).points[2] (Q).type: ",
        ],
    ),
    (  # held already: a port written as text does not hide the short interval
        one_device(TCP + '\nport = "25020"', top="interval_s = 0.5"),
        [f"devices[0] (m1): {SHORT}", "devices[0] (m1).modbus.port: must be an integer"],
    ),
    (  # a point rule and a field error in the same point: both
        one_device(TCP, '[[devices.points]]\nid = "P"\naddress = 0\norder = "CDAB"\nscale = "x"\n'),
        [
            "devices[0] (m1).points[0] (P): order 'CDAB' swaps words",
            "devices[0] (m1).points[0] (P).scale: must be a number",
        ],
    ),
    (  # the device's own rule (an empty secret) behind a bad point type
        one_device(TCP, ONE_POINT + 'type = "x"\n', top='device_secret = ""'),
        ["devices[0] (m1): device_secret is empty", "devices[0] (m1).points[0] (P).type: "],
    ),
    (  # a string without its length has no place in the map: it overlaps nothing
        one_device(TCP, OVERLAPPING.replace("address = 1\n", 'address = 1\ntype = "string"\n')),
        ["devices[0] (m1).points[1] (Voltage): type 'string' needs length"],
    ),
    (  # two rules of one endpoint, both broken: both
        one_device('transport = "rtu_over_tcp"\nhost = "h"\nunit_id = 0\nlocal_echo = true'),
        [
            "devices[0] (m1).modbus: unit_id 0 is the broadcast address",
            f"devices[0] (m1).modbus: {ECHO}",
        ],
    ),
]


MIX_IDS = [
    "overlap+order",
    "interval+unknown-key",
    "interval+local_echo",
    "local_echo+unknown-key",
    "line+unit_id-0",
    "line+unknown-key",
    "overlap+bad-type",
    "interval+port-as-text",
    "point-rule+bad-scale",
    "empty-secret+bad-type",
    "string-without-length",
    "two-endpoint-rules",
]


@pytest.mark.parametrize(("text", "expected"), MIXES, ids=MIX_IDS)
def test_one_bad_field_does_not_hide_another_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert_named(problems(tmp_path, text), expected)


def assert_named(found: list[str], expected: list[str]) -> None:
    """Each expected problem is a line of its own, and there is no other."""
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected), found


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("baudrate = 9600", "baudrate = 19200", [BAUD]),
        (
            'parity = "E"',
            "stopbits = 2",
            [
                "devices[1] (rtu-2).modbus.parity: 'N', but 'rtu-1' on the same line "
                "(rtu:/dev/ttyS0) has 'E'",
                "devices[1] (rtu-2).modbus.stopbits: 2, but 'rtu-1' on the same line "
                "(rtu:/dev/ttyS0) has 1",
            ],
        ),
        (
            "inter_request_ms = 50",
            "",
            [
                "devices[1] (rtu-2).modbus.inter_request_ms: 20 (the default), but 'rtu-1' on "
                "the same line (rtu:/dev/ttyS0) has 50"
            ],
        ),
        (
            "",
            "local_echo = true",
            [
                "devices[1] (rtu-2).modbus.local_echo: true, but 'rtu-1' on the same line "
                "(rtu:/dev/ttyS0) has false"
            ],
        ),
        (  # a bad baudrate is its own problem: the other settings are still compared
            'parity = "E"',
            "baudrate = 7",
            [
                "devices[1] (rtu-2).modbus.baudrate: Input should be greater than or equal",
                "devices[1] (rtu-2).modbus.parity: 'N', but 'rtu-1' on the same line "
                "(rtu:/dev/ttyS0) has 'E'",
            ],
        ),
    ],
)
def test_a_line_mismatch_names_each_setting_with_both_values(
    tmp_path: Path, first: str, second: str, expected: list[str]
) -> None:
    assert_named(problems(tmp_path, on_ttys0(first, second)), expected)


def test_devices_on_one_tcp_endpoint_agree_on_its_pause(tmp_path: Path) -> None:
    text = (
        HEAD
        + device("gw-1", "d1", TCP + "\ninter_request_ms = 50", ONE_POINT)
        + device("gw-2", "d2", TCP, ONE_POINT)
    )
    assert_named(
        problems(tmp_path, text),
        [
            "devices[1] (gw-2).modbus.inter_request_ms: 0 (the default), but 'gw-1' on the same "
            "line (tcp:127.0.0.1:502) has 50"
        ],
    )
