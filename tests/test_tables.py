"""Text tables (qtutor.tables): aligned columns, formats per column, text left as it is."""

from qtutor.tables import text_table


def test_text_table_aligns_and_formats():
    table = text_table([{"model": "FP32", "accuracy": 0.996}, {"model": "INT8", "accuracy": "-"}], {"accuracy": ".1%"})
    assert table.splitlines() == ["model  accuracy", "-----  --------", "FP32      99.6%", "INT8          -"]


def test_text_table_widens_a_column_to_its_longest_value():
    table = text_table([{"layer": "a", "MB": 1234.5678}, {"layer": "features.conv0", "MB": 2.0}], {"MB": ".1f"})
    assert table.splitlines() == [
        "layer               MB",
        "--------------  ------",
        "a               1234.6",
        "features.conv0     2.0",
    ]
