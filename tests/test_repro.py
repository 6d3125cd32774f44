"""Presets, result files and the batch runner's argument handling."""

import json
import subprocess

import pandas as pd
import pytest

from gift_lite import reproduce
from gift_lite.presets import PRESETS, resolve_preset
from gift_lite.repro import repo_root, run_info, seed_everything, without_root
from gift_lite.results import check_results, format_float, write_csv, write_json, write_run_json


def test_env_var_selects_the_preset(monkeypatch):
    monkeypatch.setenv("GIFT_PRESET", "smoke")
    assert resolve_preset(None).name == "smoke"
    assert resolve_preset("mini").name == "mini"  # an explicit parameter wins
    monkeypatch.delenv("GIFT_PRESET")
    assert resolve_preset(None).name == "mini"


@pytest.mark.parametrize("bad", ["tiny", "", 3, ["smoke"]])
def test_unknown_preset_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match="smoke"):
        resolve_preset(bad)


def test_smoke_never_writes_committed_results():
    smoke, mini = PRESETS["smoke"], PRESETS["mini"]
    assert "scratch" in smoke.data_dir("mini").parts
    assert "scratch" in smoke.figures_dir().parts
    assert mini.data_dir("mini") == repo_root() / "data" / "mini"


def test_run_json_records_config_versions_device_and_sha(tmp_path):
    assert write_run_json(tmp_path / "x_run.json", {"beta": 5.0}) is None  # nothing for a notebook cell to show
    info = json.loads((tmp_path / "x_run.json").read_text())
    assert info["config"] == {"beta": 5.0}
    assert info["versions"]["torch"].startswith("2.")
    assert info["device"]["cpu_count"] >= 1
    assert info["git_sha"]
    keys = set(run_info({}))
    assert {"config", "versions", "device", "git_sha"} <= keys <= {"config", "versions", "device", "git_sha", "dirty_files"}


def _git_repo(root):
    """A tiny git checkout: code, a notebook with one code cell and output, a result file."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)

    (root / "code.py").write_text("x = 1\n")
    (root / "data").mkdir()
    (root / "data" / "r.csv").write_text("a\n1\n")
    (root / "nb.ipynb").write_text(json.dumps(_notebook("print(1)", "1")))
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def _notebook(source, output):
    return {"cells": [{"cell_type": "code", "source": [source], "metadata": {"tags": []}, "execution_count": 1,
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": [output]}]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_commit_stays_clean_when_only_outputs_of_a_run_differ(tmp_path, monkeypatch):
    from gift_lite import repro

    monkeypatch.setattr(repro, "repo_root", lambda: tmp_path)
    sha = _git_repo(tmp_path)
    assert repro.git_sha() == sha
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook("print(1)", "1\n")))  # papermill, in place
    (tmp_path / "data" / "r.csv").write_text("a\n2\n")  # a result the run rewrote
    assert repro.git_sha() == sha and repro.dirty_files() == []
    repro.loaded_code(refresh=True)
    assert "dirty_files" not in repro.run_info({})
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook("print(2)", "2")))  # its code changed
    (tmp_path / "code.py").write_text("x = 2\n")
    assert repro.git_sha() == sha + "+dirty"
    repro.loaded_code(refresh=True)
    assert repro.run_info({})["dirty_files"] == ["code.py", "nb.ipynb"]
    monkeypatch.undo()
    repro.loaded_code(refresh=True)  # this checkout's again


def test_a_run_names_the_code_it_loaded_not_a_commit_made_while_it_ran(tmp_path, monkeypatch):
    from gift_lite import repro

    monkeypatch.setattr(repro, "repo_root", lambda: tmp_path)
    sha = _git_repo(tmp_path)
    repro.loaded_code(refresh=True)  # as at import
    (tmp_path / "code.py").write_text("x = 3\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "later"], cwd=tmp_path,
                   check=True)
    assert repro.git_sha() != sha and repro.run_info({})["git_sha"] == sha
    monkeypatch.undo()
    repro.loaded_code(refresh=True)


def test_run_json_is_kept_while_its_result_comes_out_the_same(tmp_path, monkeypatch):
    from gift_lite import results

    sha = {"now": "aaa"}
    monkeypatch.setattr(results, "run_info", lambda config: {"config": config, "git_sha": sha["now"]})
    frame = pd.DataFrame({"a": [1.0, 2.0]})

    def run(config, values=frame):
        write_csv(tmp_path / "x.csv", values)
        write_run_json(tmp_path / "x_run.json", config)
        return json.loads((tmp_path / "x_run.json").read_text())["git_sha"]

    assert run({"beta": 1.0}) == "aaa"
    sha["now"] = "bbb"
    assert run({"beta": 1.0}) == "aaa"  # a replay: same bytes, same config
    assert run({"beta": 2.0}) == "bbb"  # another config
    sha["now"] = "ccc"
    assert run({"beta": 2.0}, frame * 2) == "ccc"  # another result
    sha["now"] = "ddd+dirty"
    assert run({"beta": 2.0}, frame * 2) == "ccc"  # a dirty record never replaces a clean one
    sha["now"] = "eee"
    (tmp_path / "x_run.json").write_text(json.dumps({"config": {"beta": 2.0}, "git_sha": "ccc+dirty"}))
    assert run({"beta": 2.0}, frame * 2) == "eee"  # a clean one replaces a dirty one


def test_a_unit_file_records_the_commit_that_computed_it(tmp_path):
    from gift_lite.repro import loaded_code

    write_csv(tmp_path / "units" / "rl" / "sft_betainf_seed0.csv", pd.DataFrame({"value": [0.5]}))
    info = json.loads((tmp_path / "units" / "rl" / "sft_betainf_seed0_run.json").read_text())
    assert info["git_sha"] == loaded_code()[0] and info["config"] == {"file": "sft_betainf_seed0.csv"}
    write_csv(tmp_path / "results.csv", pd.DataFrame({"value": [0.5]}))
    assert not (tmp_path / "results_run.json").exists()  # other result files get theirs from write_run_json


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]})
    write_csv(tmp_path / "sub" / "t.csv", frame)
    write_json(tmp_path / "sub" / "t.json", {"k": 1})
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["t.csv", "t.json"]

    def fail(_):
        raise RuntimeError("killed")

    from gift_lite.results import atomic_write
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "sub" / "t.csv", fail)
    assert pd.read_csv(tmp_path / "sub" / "t.csv").equals(frame)  # the old file survives
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["t.csv", "t.json"]


@pytest.mark.parametrize("value, text", [
    (0.5856838730407641, "0.585683873"), (0.585683873040764, "0.585683873"),  # two machines' last ulp
    (20.0, "20.0"), (3, "3.0"), (0.1265625, "0.1265625"), (1e-8, "1e-08"), (1.1051709169133284e-08, "1.1052e-08"),
    (-9.283704501605257e-17, "0.0"), (-0.0, "0.0"), (float("inf"), "inf"), (-float("inf"), "-inf"),
    (123456789012.5, "123456789000.0")])
def test_result_floats_have_one_fixed_format(value, text):
    assert format_float(value) == text
    assert format_float(float(text)) == text  # formatting a written value again changes nothing


def test_csv_floats_are_fixed_except_in_unit_files(tmp_path):
    frame = pd.DataFrame({"method": ["sft", "gift", "base"], "beta": [float("inf"), 20.0, 0.0],
                          "value": [0.22483333333333333, float("nan"), 1 / 3],
                          "ours": ["text", 0.1234567890123, None]})  # floats among text: object dtype
    write_csv(tmp_path / "results.csv", frame)
    assert (tmp_path / "results.csv").read_text().splitlines() == [
        "method,beta,value,ours", "sft,inf,0.2248333333,text", "gift,20.0,,0.123456789", "base,0.0,0.3333333333,"]
    back = pd.read_csv(tmp_path / "results.csv")
    assert back["beta"].dtype == float and back["value"].dtype == float
    write_csv(tmp_path / "units" / "init" / "gift_b20_s0.csv", frame)
    exact = pd.read_csv(tmp_path / "units" / "init" / "gift_b20_s0.csv")
    assert exact["value"].iloc[0] == 0.22483333333333333 and exact["value"].iloc[2] == 1 / 3  # bit for bit


def results_row(**overrides):
    row = dict(method="gift", beta=5.0, seed=0, stage="init", split="id", metric="pass@1", value=0.3)
    row.update(overrides)
    return row


@pytest.mark.parametrize("bad,match", [({"stage": "after"}, "stage"), ({"split": "test"}, "split"),
                                       ({"value": float("nan")}, "value"), ({"value": float("inf")}, "value")])
def test_check_results_names_the_bad_field(bad, match):
    check_results(pd.DataFrame([results_row()]))
    with pytest.raises(ValueError, match=match):
        check_results(pd.DataFrame([results_row(**bad)]))


def test_seed_rejects_bad_values():
    seed_everything(0)
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_reproduce_rejects_unknown_notebook_numbers():
    with pytest.raises(ValueError, match="only"):
        reproduce.notebooks(["99"])
    assert reproduce.main(["reproduce", "--preset", "smoke", "--only", "99"]) == 1


def test_unwritable_output_fails_before_work(tmp_path):
    from gift_lite.results import check_writable

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        check_writable(tmp_path / "file" / "sub")  # a folder under a regular file cannot exist


def test_nearly_full_disk_fails_before_work(tmp_path, monkeypatch):
    import shutil

    from gift_lite import results

    monkeypatch.setattr(results.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 90, 10 * 2 ** 20))
    with pytest.raises(ValueError, match="MB free"):
        results.check_writable(tmp_path)


def test_committed_files_never_carry_this_machines_repo_path(tmp_path):
    root = repo_root()
    text = f'{{"input_path": "{root}/notebooks/01.ipynb", "cwd": "{root}"}} PosixPath(\'{root}/figures/a.png\')'
    assert without_root(text) == '{"input_path": "notebooks/01.ipynb", "cwd": "."} PosixPath(\'figures/a.png\')'
    assert without_root(str(tmp_path)) == str(tmp_path)  # outside the repository: as given


@pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`")  # a fresh tiny model, not a resize
def test_an_adapter_records_a_base_inside_the_repo_as_a_relative_path(tmp_path):
    from gift_lite.models import LoraSettings, add_lora, save_adapter, tiny_qwen2, TinyModelConfig

    model = add_lora(tiny_qwen2(TinyModelConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=4, num_key_value_heads=2,
                                                intermediate_size=64)), LoraSettings(r=2, lora_alpha=4))
    model.peft_config["default"].base_model_name_or_path = str(repo_root() / "data" / "mini" / "base")
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "data/mini/base"
    assert str(repo_root()) not in (tmp_path / "adapter" / "README.md").read_text()
