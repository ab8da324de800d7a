"""Several seeds of one recipe in one process.

N models are built exactly as N single runs would build them (seed k: its own split, preprocessing,
initialisation, order and augmentation). Seeds whose steps keep a thread busy train side by side, each with its
single run's exact arithmetic (`seed_parallel.ParallelSeeds`); tiny ones train as one batched computation
through `vmap` (`seed_batched.BatchedSeeds`). Both end each epoch as a single run does (`epoch.end_epoch`).
Every seed gets a normal run directory (OUT/seed-K), loadable by every command, and the report shows the spread.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.outputs import atomic_write
from cnnkit.data import load_source
from cnnkit.data.batches import num_batches
from cnnkit.data.safety import read_bytes
from cnnkit.models.stats import count_macs
from cnnkit.store.checkpoint import build_model, model_spec
from cnnkit.store.metadata import parse_json
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, image_size, prepare_data
from cnnkit.train.distributed import World
from cnnkit.train.epoch import Trainee, end_epoch, epoch_record, keep_final, tested_epoch
from cnnkit.train.evaluation import final_test
from cnnkit.train.log import EpochLog
from cnnkit.train.loop import RunResult, run_result
from cnnkit.train.losses import describe_objective, make_loss
from cnnkit.train.run_dir import RunDirectory
from cnnkit.train.schedule import lr_at
from cnnkit.train.seed_batched import BatchedSeeds
from cnnkit.train.seed_parallel import ParallelSeeds
from cnnkit.train.threads import available_cores, choose_threads

# Forward multiply-adds of one seed's step from which seeds train side by side: below it a step is per-operator
# overhead that one vmap over all seeds shares (digitsnet's 0.46 M: vmap 2x faster), above it the kernels do the
# work and one thread per seed does more (digits_cnn's 108 M: 127 vs 159 ms for 8 seeds on 2 cores).
PARALLEL_STEP_MACS = 10_000_000
SUMMARY_FILE = "seeds.json"  # beside the seed-K folders: every seed's result and the spread


@dataclass
class SeedsResult:
    """Every seed's run and the spread of their held-out test accuracies."""

    runs: list[RunResult]
    seconds: float

    @property
    def accuracies(self) -> list[float]:
        """Test accuracy per seed."""
        return [run.test_accuracy for run in self.runs]

    def summary(self) -> dict:
        """JSON-ready: per-seed summaries, mean and standard deviation of the test accuracy."""
        return {**seeds_summary([run.summary() for run in self.runs]), "seconds": round(self.seconds, 3)}


def seeds_summary(entries: list[dict]) -> dict:
    """seeds.json's content: every seed's entry (test_accuracy None until its run has finished) and the spread
    over the finished ones."""
    finished = [e["test_accuracy"] for e in entries if e["test_accuracy"] is not None]
    return {"seeds": entries, "finished": len(finished), **spread(finished)}


def spread(accuracies: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation of the seeds' test accuracies (0 for a single value, None for none)."""
    if not accuracies:
        return {"test_accuracy_mean": None, "test_accuracy_std": None}
    return {"test_accuracy_mean": statistics.mean(accuracies),
            "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0}


def _unfinished(run: RunDirectory) -> dict:
    """A seed's seeds.json entry before its test: a Ctrl-C or a crash later leaves it for `--resume` to fill."""
    return RunResult(run.path, None, None, None, 0, 0.0).summary()


def check_supported(config: TrainConfig, count: int) -> None:
    """Refuse what the batched path does not do (yet), naming the flag."""
    if not 2 <= count <= 64:
        raise CnnkitError(f"--seeds must be between 2 and 64; received {count}")
    refusals = [(config.stream, "--stream"), (config.precision != "fp32", f"--precision {config.precision}"),
                (config.eval_mode != "population", "--recipe seed (batch-statistics evaluation)"),
                (config.init_from is not None, "--init-from"), (config.sync_bn, "--sync-bn"),
                (config.compile == "on", "--compile on"), (config.patience > 0, "--patience (early stopping)"),
                (config.tensorboard, "--tensorboard")]
    for refused, flag in refusals:
        if refused:
            raise CnnkitError(f"--seeds trains every seed in memory, eager, in fp32, for all its epochs, with "
                              f"population statistics; it does not combine with {flag}")


def fit_seeds(config: TrainConfig, count: int, out: Path | None = None, overwrite: bool = False,
              progress: bool | None = None, stream: TextIO | None = None) -> SeedsResult:
    """Train seeds config.seed .. config.seed+count-1 together; with `out`, seed k's run lands in OUT/seed-K."""
    config.validate()
    check_supported(config, count)
    started = time.perf_counter()
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and
                                                                torch.cuda.is_available()) else "cpu")
    log = EpochLog(config.replace(model=f"{config.model} x{count} seeds"), True, progress, stream)
    configs = [config.replace(seed=config.seed + k) for k in range(count)]
    runs = [RunDirectory(out / f"seed-{c.seed}" if out else None, True, log.note) for c in configs]
    _check_seeds_folder(out)
    threads = torch.get_num_threads()
    try:
        for run in runs:
            run.check_free(overwrite)
        return _fit_seeds(configs, runs, log, device, overwrite, started)
    finally:
        log.close()
        for run in runs:
            run.close()
        torch.set_num_threads(threads)


def _check_seeds_folder(out: Path | None) -> None:
    """The seeds' folder holds OUT/seed-K runs and seeds.json, never a single run's files (even with --overwrite:
    replacing a run by a folder of other runs is not what --overwrite promises)."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise CnnkitError(f"{out}: exists and is not a folder; --out needs a folder for the seeds' runs")
    summary = out / SUMMARY_FILE
    if summary.exists() and not summary.is_file():
        raise CnnkitError(f"{summary}: exists and is not a file; --seeds writes the seeds' summary there")
    folder = RunDirectory(out)
    folder.refuse_foreign()  # the user's files that share a run file's name: not a run at all
    held = folder.run_files()
    if held:
        raise CnnkitError(f"{out} holds a single run ({', '.join(held)}); --seeds writes OUT/seed-K runs and "
                          "OUT/seeds.json: choose another --out")


def _fit_seeds(configs: list[TrainConfig], runs: list[RunDirectory], log: EpochLog, device: torch.device,
               overwrite: bool, started: float) -> SeedsResult:
    """Prepare every seed as its single run, train them together epoch by epoch, test each, sum up the spread."""
    config = configs[0]
    datas, models = _data_and_models(configs, device, log)
    summary_path = _open_runs(runs, configs, datas, overwrite)
    per_epoch = num_batches(len(datas[0][0].train[1]), config.batch_size, config.drop_last)
    lr_of_step = partial(lr_at, total_steps=per_epoch * config.epochs, steps_per_epoch=per_epoch, config=config)
    loss_fn = make_loss(config.loss, config.label_smoothing)
    trainer = _trainer(models, configs, [d for d, _ in datas], loss_fn, lr_of_step, device, log)
    log.note(f"training objective: {describe_objective(config.loss, config.label_smoothing)}; validation and test "
             "losses are plain cross-entropy")
    if summary_path:
        log.note(f"runs in {summary_path.parent}/seed-K, the spread in {summary_path}")
    log.note(f"each epoch line is the mean over the {len(configs)} seeds")
    log.start(1)
    trainees = [Trainee(c, d, r, s, World(device=device))
                for c, (d, _), r, s in zip(configs, datas, runs, trainer.states, strict=True)]
    try:
        for epoch in range(1, config.epochs + 1):
            _seeds_epoch(trainer, trainees, epoch, lr_of_step, log)
        log.close()
        results = trainer.map(partial(_finish, started=started), trainees)
    finally:
        trainer.close()
    return _sum_up(SeedsResult(results, time.perf_counter() - started), configs, summary_path, log)


def _open_runs(runs: list[RunDirectory], configs: list[TrainConfig], datas: list[tuple[PreparedData, dict]],
               overwrite: bool) -> Path | None:
    """Lock every seed's folder, write seeds.json (all unfinished), open each run; seeds.json's path (or None)."""
    summary_path = runs[0].path.parent / SUMMARY_FILE if runs[0].writes else None
    for run in runs:  # every seed's folder, before any is emptied: a seed being resumed elsewhere stops us here
        run.lock()
    if summary_path:  # from the start: whatever stops this process, each seed's resume finds its entry
        _write_summary(summary_path, {**seeds_summary([_unfinished(run) for run in runs]), "seconds": None})
    for run, seed_config, (data, spec) in zip(runs, configs, datas, strict=True):
        run.open(overwrite)
        run.describe(seed_config, spec, data)
        run.write_config(seed_config)
    return summary_path


def _seeds_epoch(trainer: ParallelSeeds | BatchedSeeds, trainees: list[Trainee], epoch: int,
                 lr_of_step: Callable[[int], float], log: EpochLog) -> None:
    """One epoch of every seed, ended as its single run ends it; the log line is the mean over the seeds."""
    started = time.perf_counter()
    sums = trainer.train_epoch(epoch)
    _refuse_diverged(sums, trainees, epoch)
    records = [epoch_record(s, epoch, t.state.step, lr_of_step(t.state.step - 1))
               for s, t in zip(sums, trainees, strict=True)]
    end_epoch(trainees, records, started, log, lambda done: log.epoch(_mean_record(done, epoch)), trainer.map)
    trainer.evaluated()


def _finish(trainee: Trainee, started: float) -> RunResult:
    """A seed's test on its best weights, its final checkpoint and record, and its entry in seeds.json."""
    state = trainee.state
    final = final_test(state.model, state.best_state, trainee.data, trainee.config, trainee.world.device,
                       tested_epoch(state))
    keep_final(trainee, final)
    result = run_result(trainee, final, started)
    refresh_seeds_summary(result, lambda _: None)  # a finished run's resume is refused: its entry, now
    return result


def _sum_up(outcome: SeedsResult, configs: list[TrainConfig], summary_path: Path | None, log: EpochLog
            ) -> SeedsResult:
    """seeds.json with every seed's result and the spread; the log's closing lines."""
    summary = outcome.summary()
    if summary_path:
        _write_summary(summary_path, summary)
    per_seed = ", ".join(f"{c.seed}: {100 * a:.2f}%" for c, a in zip(configs, outcome.accuracies, strict=True))
    log.note(f"test accuracy per seed: {per_seed}")
    log.note(f"test accuracy over {len(configs)} seeds: {100 * summary['test_accuracy_mean']:.2f}% +- "
             f"{100 * summary['test_accuracy_std']:.2f}% (mean +- standard deviation)")
    return outcome


def refresh_seeds_summary(run: RunResult, say: Callable[[str], None]) -> None:
    """After one seed of a --seeds folder is resumed on its own: its entry in the folder's seeds.json, and the mean
    and spread, follow its new result (a seeds.json cnnkit cannot read is left as it is, and said). Sibling seeds
    resumed at once take turns: the folder is locked from reading the file to writing it."""
    folder = run.run_dir.resolve() if run.run_dir is not None else None  # `--resume .` names the folder too
    if folder is None or run.test_accuracy is None or not (folder.parent / SUMMARY_FILE).exists():
        return
    path = folder.parent / SUMMARY_FILE
    with _locked(folder.parent):
        try:
            summary = _with_entry(path, folder.name, run)
        except (CnnkitError, KeyError, TypeError, ValueError, OSError):
            say(f"{path}: not updated (not a seeds summary cnnkit can read)")
            return
        if summary is None:  # a folder whose seeds.json does not list this run
            return
        try:
            _write_summary(path, summary)
        except (CnnkitError, OSError) as error:  # the run itself has finished and is saved: say it, go on
            say(f"{path.name} not updated: {error}")
            return
    count = len(summary["seeds"])
    over = f"{count} seeds" if summary["finished"] == count else \
        f"the {summary['finished']} of {count} seeds that have finished"
    say(f"{path}: updated with this run; test accuracy over {over} now "
        f"{100 * summary['test_accuracy_mean']:.2f}% +- {100 * summary['test_accuracy_std']:.2f}%")


def _with_entry(path: Path, folder_name: str, run: RunResult) -> dict | None:
    """seeds.json with the run's entry replaced and the spread redone; None if it does not list the run."""
    summary = parse_json(read_bytes(path, cap="json_bytes"), path)
    entries = summary["seeds"]
    # By folder name: seeds.json lies beside its seed-K folders, wherever the user stands or moved them.
    index = next((i for i, e in enumerate(entries) if Path(e["run_dir"]).name == folder_name), None)
    if index is None:
        return None
    entries[index] = {**run.summary(), "run_dir": entries[index]["run_dir"]}  # as --seeds spelt it
    if not all(_accuracy_or_none(e["test_accuracy"]) for e in entries):
        raise ValueError("test accuracies must be numbers between 0 and 1, or null before the test")
    summary.update(seeds_summary(entries))
    return summary


def _write_summary(path: Path, summary: dict) -> None:
    atomic_write(path, json.dumps(summary, indent=1).encode())


def _accuracy_or_none(value: object) -> bool:
    return value is None or (type(value) in (int, float) and 0.0 <= value <= 1.0)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (flock on its descriptor: no file is left behind)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder we may enter but not list: no lock to take
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _data_and_models(configs: list[TrainConfig], device: torch.device, log: EpochLog
                     ) -> tuple[list[tuple[PreparedData, dict]], list[nn.Module]]:
    """Each seed's (data, model spec) and fresh model, exactly as its single run makes them: seeded, then the data,
    then the model; the source is decoded once for all of them. The training splits must be equal in size (the
    seeds step together)."""
    datas, models = [], []
    source = load_source(configs[0].data, image_size(configs[0]), progress=log.enabled and log.tty)
    for config in configs:
        torch.manual_seed(config.seed)
        data = prepare_data(config, device, loaded=source)
        channels, h, w = data.dataset.image_shape
        spec = model_spec(config.model, config.model_options, len(data.dataset.class_names), channels, (h, w))
        datas.append((data, spec))
        models.append(build_model(spec).to(device))
    for line in datas[0][0].notes:
        log.note(line)
    sizes = {len(data.train[1]) for data, _ in datas}
    if len(sizes) != 1:
        raise CnnkitError(f"the seeds' training splits differ in size ({sorted(sizes)}); --seeds needs equal splits")
    return datas, models


def _refuse_diverged(sums: list[dict], trainees: list[Trainee], epoch: int) -> None:
    """Stop, as a single run does, when any seed's training loss is no longer finite (naming the seeds)."""
    bad = [k for k, seed_sums in enumerate(sums) if not math.isfinite(float(seed_sums["loss_sum"]))]
    if not bad:
        return
    which = ", ".join(f"seed {trainees[k].config.seed} ({float(sums[k]['loss_sum'])})" for k in bad)
    run = trainees[0].run
    kept = run.last_good(str(run.path.parent)) if run.path is not None else ""
    raise CnnkitError(f"the training loss became non-finite at epoch {epoch} for {which}; training stopped{kept}. "
                      "Try a lower --lr or --grad-clip")


def _trainer(models: list[nn.Module], configs: list[TrainConfig], datas: list[PreparedData], loss_fn: Callable,
             lr_of_step: Callable[[int], float], device: torch.device, log: EpochLog) -> ParallelSeeds | BatchedSeeds:
    """On the CPU, side by side (each seed its single run's exact arithmetic) unless a step is too small to keep a
    thread busy: there one vmap over all seeds wins (digitsnet, 8 seeds: 13.5 vs 23 ms a step on 2 cores), at the
    price of batch norm rounding differently from the single runs. On a GPU, one vmap: big batched kernels are
    what a GPU is for, and its single runs draw dropout masks with a fused kernel no other path reproduces."""
    config = configs[0]
    macs = count_macs(models[0], models[0].input_shape, device="cpu") * config.batch_size
    if device.type == "cpu" and macs >= PARALLEL_STEP_MACS:
        single_threads, why = choose_threads(config.threads, models[0], config.batch_size, device)
        workers = max(1, min(len(models), available_cores() // single_threads))
        torch.set_num_threads(single_threads)
        at_once = f"{workers} seeds at a time" if workers > 1 else "one seed at a time"
        log.note(f"training {config.model} with seeds {configs[0].seed}..{configs[-1].seed} side by side on "
                 f"{config.data}, each exactly as its single run: {at_once}, each step on {single_threads} "
                 f"thread{'s' if single_threads > 1 else ''} ({why})")
        return ParallelSeeds(models, configs, datas, loss_fn, lr_of_step, workers, device)
    # The batched step is many small per-seed kernels: two threads measured 1.6x faster than one for 8 seeds of
    # digits_cnn on a quiet 2-core machine (76 vs 122 s), where one seed's step gains nothing from a second thread.
    threads, why = choose_threads(config.threads, models[0], config.batch_size * len(configs), device,
                                  small_step_macs=0)
    torch.set_num_threads(threads)
    log.note(f"training {config.model} with seeds {configs[0].seed}..{configs[-1].seed} as one batched "
             f"computation on {config.data}; threads: {threads} ({why}; {len(configs)} seeds at once)")
    return BatchedSeeds(models, configs, datas, loss_fn, lr_of_step, device)


def _mean_record(records: list[dict], epoch: int) -> dict:
    """The epoch's record averaged over seeds, for the log line."""
    mean = {"epoch": epoch, "lr": records[0]["lr"], "seconds": records[0]["seconds"]}
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            mean[key] = statistics.mean(values)
    return mean
