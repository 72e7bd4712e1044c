"""Command line: ``facetorch fit|validate|test|predict``, ``tools/train.py`` and ``tools/evaluate.py``.

All three share :class:`FaceCLI`, a ``LightningCLI`` over any :class:`~facetorch.tasks.FaceTask`
and the shared :class:`~facetorch.data.FaceDataModule`. Data facts reach the model through
argument links: ``data.num_classes``, ``data.class_names`` and ``data.channels``.

Where a run goes: ``<save_dir>/<name>/version_N``, where ``name`` is the config's logger name and
``save_dir`` is ``runs`` unless ``--trainer.default_root_dir=DIR`` is given, which places the run
under ``DIR`` (as Lightning users expect). Each new run takes the next free ``version_N``.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from facetorch import io
from facetorch.callbacks.checkpoint import AtomicCheckpointIO, best_checkpoint
from facetorch.callbacks.keep_start import KeepStartCheckpoint
from facetorch.callbacks.progress import StderrProgressBar
from facetorch.cli.common import INPUT_ERRORS, FacetorchParsing, run_tool
from facetorch.data import FaceDataModule
from facetorch.data.datamodule import DATA_VALUES
from facetorch.inference.checkpoint import (
    INITIAL_WEIGHT_ARGS,
    CheckpointError,
    read_checkpoint,
    restore_weights,
    task_class_name,
)
from facetorch.ranges import check_values
from facetorch.tasks import FaceTask

DEFAULT_SAVE_DIR = "runs"
DEFAULT_LOGGER = {
    "class_path": "pytorch_lightning.loggers.CSVLogger",
    "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": "facetorch"},
}
RUN_LOGGERS = ("pytorch_lightning.loggers.CSVLogger", "pytorch_lightning.loggers.TensorBoardLogger",
               "lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.TensorBoardLogger")


# Class paths of facetorch 0.1.0 that 0.2.0 removed: a saved config.yaml naming them still runs, with a note.
OLD_CLASS_PATHS = {
    "facetorch.finetuning.FreezeUnfreeze": "facetorch.callbacks.FreezeUnfreeze",
    "facetorch.checkpointing.BestAndLastCheckpoint": "facetorch.callbacks.BestAndLastCheckpoint",
    "facetorch.checkpointing.AtomicCheckpointIO": "facetorch.callbacks.AtomicCheckpointIO",
}


def translate_old_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config FILE`` that names a 0.1.0 class path given as its translated YAML text.

    The file itself is never changed: a note on stderr says what to change in it.

    Raises:
        ValueError: a config file that is not a mapping of sections (a list, a number, an empty file).
    """
    out = list(args)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag not in ("--config", "-c"):
            continue
        index, path = (i, value) if eq else (i + 1, out[i + 1] if i + 1 < len(out) else "")
        file = Path(path)
        if not path or not file.is_file():
            continue
        io.read_config(file, flag)  # a list, a number or an empty file is named here, not deep inside jsonargparse
        text = file.read_text(encoding="utf-8")
        old = [name for name in OLD_CLASS_PATHS if name in text]
        for name in old:
            text = text.replace(name, OLD_CLASS_PATHS[name])
            print(f"facetorch: note: {path} names {name}, removed in 0.2.0: read as {OLD_CLASS_PATHS[name]} "
                  "(change it in the file; see CHANGELOG.md)", file=sys.stderr)  # fmt: skip
        if old:
            out[index] = f"--config={text}" if eq else text
    return out


class FaceArgumentParser(FacetorchParsing, LightningArgumentParser):
    """Lightning's parser as facetorch's tools use it: flags only in full, plain help, a hint for a flag that is not there."""


# The data options that make a model's input: a checkpoint trained on one value sees other pixels with another.
INPUT_OPTIONS = ("image_size", "channels", "normalization", "center_crop", "align", "align_box")


def _comparable(value: Any) -> Any:
    return [_comparable(v) for v in value] if isinstance(value, (list, tuple)) else value


def input_differences(checkpoint: dict[str, Any], data: Any) -> list[tuple[str, Any, Any]]:
    """``(option, trained, given)`` for each input option of ``data`` that differs from what the checkpoint trained with."""
    saved = checkpoint.get("datamodule_hyper_parameters") or {}
    given = data if data is not None else {}
    return [(key, _comparable(saved[key]), _comparable(given.get(key))) for key in INPUT_OPTIONS
            if key in saved and key in given and _comparable(saved[key]) != _comparable(given.get(key))]  # fmt: skip


class FaceCLI(LightningCLI):
    """LightningCLI for facetorch tasks.

    It links data facts into the model, checkpoints by the task's monitor, writes checkpoints
    atomically, logs to ``runs/<name>/version_N`` (or under ``trainer.default_root_dir``), and
    builds the model without reading pretrained weight files when ``--ckpt_path`` will replace
    its weights anyway. Progress bars go to stderr, and only to a terminal.
    """

    # Export and explain take the model's input from the checkpoint; the others feed it the config's data.
    input_from_checkpoint = False

    def __init__(self, args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> None:
        args = translate_old_configs(sys.argv[1:] if args is None else list(args))
        super().__init__(
            model_class=FaceTask,
            datamodule_class=FaceDataModule,
            subclass_mode_model=True,
            seed_everything_default=0,
            trainer_defaults={"logger": DEFAULT_LOGGER},
            auto_configure_optimizers=False,
            parser_class=FaceArgumentParser,
            args=args,
            run=run,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # facetorch always passes the arguments itself (sys.argv, translated): Lightning's warning
        # against giving both args and a command line is for scripts that mix the two.
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.channels", "model.init_args.in_channels")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    @property
    def command_config(self) -> Namespace:
        """The config of the subcommand being run (or the whole config without subcommands)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self.command_config
        _place_run_folder(config)
        # Before anything is built: export and explain build no data module, which would check them too.
        check_values("data", config.get("data") or Namespace(), DATA_VALUES)
        if self.subcommand == "fit" or isinstance(self, TrainCLI):
            check_runs_outside_data(config)
        self.checkpoint = None
        if config.get("ckpt_path"):  # a missing, broken or foreign checkpoint is named before any work
            self.checkpoint = check_checkpoint_fits(config.ckpt_path, config.get("model.class_path"))
            self.check_input_against_checkpoint(config)

    def check_input_against_checkpoint(self, config: Namespace) -> None:
        """Say where the config's data gives the model another input than the checkpoint was trained with.

        Raises:
            CheckpointError: other channels, where the config's data feeds the model (it cannot read them).
        """
        ckpt = config.ckpt_path
        for key, trained, given in input_differences(self.checkpoint, config.get("data")):
            if self.input_from_checkpoint:
                io.notice(f"note: data.{key} {given} is not used: the input {ckpt!r} was trained with is ({trained})")
            elif key == "channels":
                raise CheckpointError(f"data.channels is {given}, but --ckpt_path {ckpt!r} was trained on {trained}-channel "
                                      f"images, which the model needs; give --data.channels={trained} (the run's config.yaml "
                                      "has it)")  # fmt: skip
            else:
                io.notice(f"warning: data.{key} is {given}, but --ckpt_path {ckpt!r} was trained with {trained}: the model sees "
                          "another input than it learnt from, so its numbers are not the trained model's (the run's "
                          "config.yaml holds the trained values)")  # fmt: skip

    def instantiate_classes(self) -> None:
        ckpt_path = self.command_config.get("ckpt_path")
        with _initial_weights_off(self.command_config.get("model"), active=bool(ckpt_path)):
            try:
                super().instantiate_classes()
            except ValueError as error:
                # jsonargparse wraps a class's own error (a missing weight file, a bad option) in
                # "Does not validate against any of the Union subtypes ..." and the whole config;
                # the class's one-line message is what the user needs.
                if isinstance(error.__cause__, INPUT_ERRORS):
                    raise error.__cause__ from None
                raise
            except ModuleNotFoundError as error:  # a trainer option whose package is not installed (accelerator: tpu)
                raise ValueError(f"the config needs a package that is not installed: {error}") from error

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer_config.get("callbacks") or [])
        wants_checkpoints = kwargs.get("enable_checkpointing", trainer_config.get("enable_checkpointing", True)) is not False
        if wants_checkpoints and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(best_checkpoint(self.model.monitor, self.model.monitor_mode))
        elif not wants_checkpoints:  # a config's own checkpoint callback (KeepStartCheckpoint) serves training only
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        if kwargs.get("enable_progress_bar", trainer_config.get("enable_progress_bar")) is not False:
            if not sys.stderr.isatty():  # a log file or a pipe: carriage returns are noise there
                kwargs["enable_progress_bar"] = False
            elif not any(isinstance(c, ProgressBar) for c in callbacks):
                callbacks.append(StderrProgressBar())
        kwargs.setdefault("callbacks", callbacks)
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def check_checkpoint_fits(ckpt_path: str, class_path: Optional[str]) -> dict[str, Any]:
    """The checkpoint, read; refused when it is missing, unreadable or of another task than the config's model.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a facetorch checkpoint, or of another task (both names in the message).
    """
    checkpoint = read_checkpoint(ckpt_path)
    saved = task_class_name(checkpoint)
    if saved and class_path and saved.rsplit(".", 1)[-1] != class_path.rsplit(".", 1)[-1]:
        name = saved.rsplit(".", 1)[-1]
        raise CheckpointError(
            f"--ckpt_path {ckpt_path!r} is a{'n' if name[0] in 'AEIOU' else ''} {name} checkpoint, but the config's model is "
            f"{class_path.rsplit('.', 1)[-1]}; give the config the checkpoint was trained with (its run folder's config.yaml)"
        )
    return checkpoint


def _place_run_folder(config: Namespace) -> None:
    """``--trainer.default_root_dir=DIR`` alone places the run.

    A run logger left at the default ``save_dir`` (``runs``) writes under ``DIR`` instead.
    """
    root = config.get("trainer.default_root_dir")
    logger = config.get("trainer.logger")
    run_logger = isinstance(logger, Namespace) and logger.get("class_path") in RUN_LOGGERS
    if root and run_logger and logger.get("init_args.save_dir") in (None, DEFAULT_SAVE_DIR):
        logger["init_args.save_dir"] = str(root)


def check_runs_outside_data(config: Namespace) -> None:
    """Refuse a training run whose run folders would go inside ``data.root`` (a rerun would read them as data).

    Raises:
        ValueError: naming both folders.
    """
    logger, root = config.get("trainer.logger"), config.get("trainer.default_root_dir")
    run_logger = isinstance(logger, Namespace) and logger.get("class_path") in RUN_LOGGERS
    runs = Path(logger.get("init_args.save_dir") or DEFAULT_SAVE_DIR) if run_logger else Path(root or ".")
    data = config.get("data.root")
    if data and Path(data).resolve() in (runs.resolve(), *runs.resolve().parents):
        raise ValueError(f"run folders would go under {str(runs)!r}, inside --data.root {data!r}, and become part of the "
                         "data set; give --trainer.default_root_dir a folder outside it")  # fmt: skip


@contextmanager
def _initial_weights_off(model: Optional[Namespace], active: bool) -> Iterator[None]:
    """Build the model without pretrained weight files while a checkpoint will replace its weights.

    The config keeps its own values (the run's ``config.yaml`` is saved from it), so a run that
    resumed or tested a checkpoint still records ``pretrained: true`` where the user wrote it.
    """
    init_args = model.get("init_args") if isinstance(model, Namespace) else None
    saved = {key: init_args[key] for key in INITIAL_WEIGHT_ARGS if isinstance(init_args, Namespace) and key in init_args}
    if not active or not saved:
        yield
        return
    for key in saved:
        init_args[key] = INITIAL_WEIGHT_ARGS[key]
    try:
        yield
    finally:
        for key, value in saved.items():
            init_args[key] = value


class TrainCLI(FaceCLI):
    """``tools/train.py``: no subcommand; ``--ckpt_path`` resumes training."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="Checkpoint to resume training from.")


class EvaluateCLI(FaceCLI):
    """``tools/evaluate.py``: test a checkpoint (or the model as the config builds it) on every image of ``--data.root``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path", type=Optional[str], default=None,
            help="Checkpoint to evaluate. Without it, the model as the config builds it is tested: a pretrained "
                 "network as it is (e.g. configs/embedding_dlib.yaml), or random weights.",
        )  # fmt: skip
        parser.add_argument(
            "--output", type=Optional[str], default=None,
            help="Write the metrics JSON here, and the plots beside it as <its name>_<plot>.png, instead of a run folder "
                 "under runs/.",
        )  # fmt: skip
        parser.add_argument("--overwrite", action="store_true",
                            help="Replace an existing, non-empty --output and its plots (never an input).")  # fmt: skip
        parser.add_argument(
            "--pairs", type=Optional[str], default=None,
            help="Embedding tasks: verify the pairs of this LFW pairs.txt (images in images/ beside it, else --data.root).",
        )  # fmt: skip

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        if self.config.get("output"):  # before the model is built and any image is read
            output = io.check_output_file(self.config.output, self.config.overwrite, inputs=run_inputs(self.config))
            _check_plots_beside(output, self.config.overwrite)
        # Always every image of --data.root, even with a run's saved config.yaml (eval_all: false).
        self.config["data"]["eval_all"] = True
        names = (self.checkpoint or {}).get("hyper_parameters", {}).get("class_names")
        embedding = _is_embedding_task(str(self.config.get("model.class_path") or ""))
        if names and self.config["data"].get("layout") == "identity_folders" and not embedding:
            # Labels follow the people the model was trained on (a folder of fewer people included),
            # and a person it never saw is refused by name: identity accuracy counts trained people.
            # An embedding verifies pairs of any people, those it never saw above all.
            self.config["data"]["classes"] = list(names)
        if self.config.get("pairs"):
            model = str(self.config.get("model.class_path") or "")
            if not _is_embedding_task(model):
                raise ValueError(
                    f"--pairs verifies face pairs with an embedding model, but the config's model is "
                    f"{model.rsplit('.', 1)[-1] or 'not set'}; give an embedding config (e.g. configs/embedding_triplet.yaml)"
                )
            self.config["data"]["pairs_file"] = self.config["pairs"]


    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        kwargs["enable_checkpointing"] = False  # nothing is trained: no checkpoint callback (none restored either)
        if self.config.get("output"):  # the JSON and the plots go where --output says: no run folder, no config.yaml
            kwargs["logger"] = False
            kwargs["default_root_dir"] = str(Path(self.config.output).parent)
            self.save_config_callback = None
        return super().instantiate_trainer(**kwargs)


def run_inputs(config: Namespace) -> dict[str, Any]:
    """What a run reads (the config files, the checkpoint, the data): an output may never be one of these."""
    data = config.get("data") or Namespace()
    return {"--config": [str(c) for c in config.get("config") or []], "--ckpt_path": config.get("ckpt_path"),
            "--data.root": data.get("root"), "--data.shards": data.get("shards"), "--data.pairs_file": data.get("pairs_file"),
            "--data.predict_dir": data.get("predict_dir"), "--pairs": config.get("pairs")}  # fmt: skip


def _check_plots_beside(output: Path, overwrite: bool) -> None:
    """Refuse (unless ``overwrite``) when plots of an earlier run are beside ``--output`` (``<stem>_roc.png``, ...)."""
    earlier = sorted(p.name for p in output.parent.glob(f"{output.stem}_*") if p.suffix in (".png", ".csv", ".txt"))
    if earlier and not overwrite:
        raise FileExistsError(f"--output {str(output)!r}: {io.first_few(earlier, 3)} beside it would be replaced (the plots "
                              f"are written as {output.stem}_<plot>.png); pass --overwrite, or choose another name")  # fmt: skip


def _is_embedding_task(class_path: str) -> bool:
    from facetorch.tasks import EmbeddingTask

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, EmbeddingTask)


def _discard_empty_run(trainer: Trainer) -> None:
    """Remove a run folder that a failed run left holding only its config (nothing to look at)."""
    logger = trainer.loggers[0] if trainer.loggers else None
    folder = Path(logger.log_dir) if logger is not None and getattr(logger, "log_dir", None) else None
    if folder is None or not folder.is_dir() or not trainer.is_global_zero:
        return
    leftovers = [p for p in folder.rglob("*") if p.is_file()]
    only_setup = all(p.name in ("config.yaml", "hparams.yaml") or (p.name == "metrics.csv" and p.stat().st_size < 200)
                     for p in leftovers)  # fmt: skip
    if only_setup and not any(p.suffix == ".ckpt" for p in leftovers):
        shutil.rmtree(folder, ignore_errors=True)


def _best_or_last(trainer: Trainer) -> Optional[str]:
    """The checkpoint to test after fitting: best, else last, else the weights in memory (``None``)."""
    if trainer.fast_dev_run:
        return None
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    for path in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")):
        if path and Path(path).is_file():
            return path
    return None


def describe_run_folder(trainer: Trainer) -> Optional[str]:
    """One line: where the run folder is and what it holds (``None`` when nothing was written)."""
    if trainer.fast_dev_run or not trainer.is_global_zero or not trainer.loggers:
        return None
    folder = Path(trainer.loggers[0].log_dir)
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != "hparams.yaml")
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir():
        names = [n for n in names if n != "checkpoints"] + [f"checkpoints/{p.name}" for p in sorted(checkpoints.glob("*.ckpt"))]
    return f"Run folder: {folder} ({', '.join(names)})"


def _say_where(trainer: Trainer) -> None:
    line = describe_run_folder(trainer)
    if line:
        print(line, file=sys.stderr, flush=True)


def train(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Fit, then test the best checkpoint (or validate it when there is no test split).

    Returns:
        The flat metrics that were written to ``metrics.json`` in the run folder.
    """
    cli = TrainCLI(args=args, run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    try:
        trainer.fit(model, datamodule=data, ckpt_path=cli.config.ckpt_path)
        if trainer.global_step <= int((cli.checkpoint or {}).get("global_step", 0)):
            resumed = ", resumed at its end" if cli.checkpoint else ""
            raise ValueError(f"no training step ran (trainer.max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps}, "
                             f"limit_train_batches={trainer.limit_train_batches}{resumed}): nothing was trained; allow at "
                             "least one epoch of at least one batch")  # fmt: skip
    except BaseException:
        _discard_empty_run(trainer)
        raise
    ckpt = _best_or_last(trainer)
    # What chose the checkpoint (KeepStartCheckpoint: the start's score, the margin, whether best.ckpt is the start),
    # read before testing restores the callbacks' state from the checkpoint.
    chosen = {key: value for c in trainer.callbacks if isinstance(c, KeepStartCheckpoint) for key, value in c.summary().items()}
    if data.has_split("test"):
        trainer.test(model, datamodule=data, ckpt_path=ckpt)
        report = dict(model.test_report)
    else:
        results = trainer.validate(model, datamodule=data, ckpt_path=ckpt)
        report = {key: float(value) for key, value in (results[0] if results else {}).items()}
        report["num_samples"] = len(data.splits["val"])
    model.write_report({**report, **chosen})
    report = model.test_report
    _say_where(trainer)
    return report


def evaluate(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Evaluate ``--ckpt_path`` (or, without it, the model as configured) on every image under ``--data.root``.

    Prints the JSON as the last line.
    """
    cli = EvaluateCLI(args=args, run=False)
    output = Path(cli.config.output) if cli.config.output else None
    cli.model.report_file = output  # the JSON at --output, the plots beside it
    if cli.checkpoint is not None:  # the weights only: nothing of the training run (callbacks, loops) is restored
        restore_weights(cli.model, cli.checkpoint, cli.config.ckpt_path)
    cli.trainer.test(cli.model, datamodule=cli.datamodule)
    report = cli.model.test_report
    if cli.trainer.is_global_zero:
        if output is not None:
            plots = [p.name for p in cli.model.artifacts if p.is_file()]
            print(f"Wrote {output}{' and ' + ', '.join(plots) if plots else ''} (in {output.parent})", file=sys.stderr)
        else:
            _say_where(cli.trainer)
        sys.stdout.flush()
        print(io.json_line(report), flush=True)
    return report


def train_main(argv: Optional[list[str]] = None) -> None:
    """``tools/train.py``: :func:`train`, with input errors as one line and exit code 2."""
    sys.exit(run_tool("train.py", train, argv))


def evaluate_main(argv: Optional[list[str]] = None) -> None:
    """``tools/evaluate.py``: :func:`evaluate`, with input errors as one line and exit code 2."""
    sys.exit(run_tool("evaluate.py", evaluate, argv))


def main(args: Optional[list[str]] = None) -> None:
    """The ``facetorch`` console script: ``facetorch fit|validate|test|predict --config ...``."""
    FaceCLI(args=args)


def lightning_main(argv: Optional[list[str]] = None) -> None:
    """``facetorch fit|validate|test|predict``: :func:`main`, with input errors as one line and exit code 2."""
    sys.exit(run_tool("facetorch", main, argv))
