"""Hydra launchers: a 2 x 2 sweep run in parallel processes by joblib and by submitit (locally) records exactly what
the basic launcher records, in one shared results store; the SLURM preset composes into a valid sbatch script."""

import pytest

from tests.helpers.sweeps import cell_values, run

SWEEP = ["-m", "sweep=smoke", "task=passkey", "mechanism=full,sliding_window", "eval.seed=0,1"]
LAUNCHERS = {"joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]}


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    root = tmp_path_factory.mktemp("basic")
    done = run(root, *SWEEP)
    assert done.returncode == 0, done.stderr[-3000:]
    return cell_values(root / "results" / "smoke" / "records.jsonl")


@pytest.mark.slow  # 18-31 s each, after the basic sweep (18 s)
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_parallel_launchers_record_what_the_basic_launcher_records(launcher, basic, tmp_path):
    done = run(tmp_path, *SWEEP, *LAUNCHERS[launcher])
    assert done.returncode == 0, done.stderr[-3000:]
    assert cell_values(tmp_path / "results" / "smoke" / "records.jsonl") == basic
    assert len({key[0] for key in basic}) == 4  # four cells


@pytest.mark.slow  # 20 s
def test_a_failed_cell_in_another_process_still_fails_the_command(tmp_path):
    done = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window",
               "inject_nan_at_step=1,null", *LAUNCHERS["joblib"])
    assert done.returncode == 3, done.stderr[-3000:]
    assert "1 cell(s) did not finish" in done.stderr and "loss is nan at step 1" in done.stderr


def test_slurm_preset_builds_an_sbatch_script_with_the_documented_settings():
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import _make_sbatch_string

    from bench.config.schema import register_configs
    from bench.harness.preflight import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    script = _make_sbatch_string(
        command="python -m bench", folder="/shared/out/%j", partition=launcher.partition,
        time=launcher.timeout_min, gpus_per_node=launcher.gpus_per_node, cpus_per_task=launcher.cpus_per_task,
        mem=f"{launcher.mem_gb}GB", nodes=launcher.nodes, ntasks_per_node=launcher.tasks_per_node,
        array_parallelism=launcher.array_parallelism, map_count=64)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=240", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --array=0-63%32"):
        assert line in script
