"""show_config and the package surface."""

from __future__ import annotations

import json

import embtable


def test_show_config_dicts():
    cfg = embtable.show_config(mode="dicts")
    assert set(cfg) >= {"version", "build", "simd", "threads"}
    assert cfg["version"] == embtable.__version__
    assert cfg["build"]["compiler"]
    simd = cfg["simd"]
    assert "baseline" in simd["compiled"]
    assert simd["selected"] in simd["compiled"]
    assert simd["detected"] in simd["compiled"]
    assert cfg["threads"]["num_threads"] == embtable.get_num_threads()
    json.dumps(cfg)


def test_show_config_prints(capsys):
    assert embtable.show_config() is None
    printed = capsys.readouterr().out
    assert embtable.__version__ in printed and "simd" in printed


def test_all_names_exist():
    for name in embtable.__all__:
        assert hasattr(embtable, name), name
