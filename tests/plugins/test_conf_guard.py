from plugins.conf_guard import unknown_conf_keys


def test_unknown_keys_are_listed_sorted():
    assert unknown_conf_keys({"vocab_size": 1, "zz": 2, "aa": 3}, {"vocab_size"}) == ["aa", "zz"]


def test_declared_and_empty_conf_pass():
    assert unknown_conf_keys({"vocab_size": 1}, {"vocab_size", "other"}) == []
    assert unknown_conf_keys(None, {"vocab_size"}) == []
