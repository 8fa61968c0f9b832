import csv
import io

from lib.core.export import rows_to_csv


def test_rows_to_csv_caps_and_writes_json_cells():
    chunks = [[(1, {"b": 2, "a": 1}, "x,y")], [(2, None, "=cmd")], [(3, [1], "z")]]
    data, n, truncated = rows_to_csv(["n", "details", "text"], chunks, cap=2)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [["n", "details", "text"], ["1", '{"a": 1, "b": 2}', "x,y"], ["2", "", "'=cmd"]]
    assert (n, truncated) == (2, True)
    _, n, truncated = rows_to_csv(["n", "details", "text"], chunks)
    assert (n, truncated) == (3, False)
