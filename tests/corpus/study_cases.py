"""Bad study files for `mnist-study run STUDY --out RUN`: wrong types, unknown keys, impossible
values, enormous studies, runaway nesting, and `extends` chains that go nowhere or in circles."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from corpus.cases import Case

GOOD = 'name = "s"\n\n[[experiment]]\nname = "a"\nhidden = 8\nvalidation_size = 10\nmax_epochs = 1\n'
CLAIM = '\n[[claim]]\nname = "c"\ntext = "t"\nchecks = [{check}]\n'


def _case(name: str, text: str | Callable[[], str | bytes], expect: str,
          extra: dict[str, str | bytes] | None = None) -> Case:
    """A study file `study.toml` holding `text`, and beside it the files in `extra` (name -> text)."""
    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in (extra or {}).items():
            (folder / file_name).write_bytes(content if isinstance(content, bytes) else content.encode())
        content = text() if callable(text) else text
        path = folder / "study.toml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return Case(f"study-{name}", "study", make, expect)


def experiments(n: int) -> str:
    return 'name = "huge"\n' + "".join(f'[[experiment]]\nname = "e{i}"\nhidden = 1\n' for i in range(n))


def nested_arrays(depth: int) -> str:
    return GOOD + "title = " + "[" * depth + "1" + "]" * depth + "\n"


def nested_tables(depth: int) -> str:
    return GOOD + "reference = " + "{ a = " * depth + "1" + " }" * depth + "\n"


def _directory(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").mkdir()
    return folder / "study.toml"


def _missing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "no-such-study.toml"


STUDY_CASES: list[Case] = [
    # wrong types
    _case("name-number", GOOD.replace('name = "s"', "name = 5"), "name: Input should be a valid string"),
    _case("hidden-string", GOOD.replace("hidden = 8", 'hidden = "8"'), "experiment 'a' > hidden"),
    _case("hidden-float", GOOD.replace("hidden = 8", "hidden = 8.5"), "experiment 'a' > hidden"),
    _case("l2-string", GOOD + 'l2 = "small"\n', "experiment 'a' > l2"),
    _case("early-stopping-string", GOOD + 'early_stopping = "yes"\n', "experiment 'a' > early_stopping"),
    _case("max-epochs-bool", GOOD.replace("max_epochs = 1", "max_epochs = true"), "experiment 'a' > max_epochs"),
    _case("learning-rate-string", GOOD + 'learning_rate = "1e-3"\n', "experiment 'a' > learning_rate"),
    _case("batch-size-list", GOOD + "batch_size = [32]\n", "experiment 'a' > batch_size"),
    _case("validation-number", GOOD + "validation = 1\n", "experiment 'a' > validation"),
    _case("frontend-string", GOOD + 'frontend = "pca"\n', "experiment 'a' > frontend"),
    _case("frontend-kind-number", GOOD + "frontend = { kind = 5 }\n", "experiment 'a' > frontend"),
    _case("reference-number", GOOD + "reference = 90\n", "experiment 'a' > reference"),
    _case("experiment-string", 'name = "s"\nexperiment = "a"\n', "experiment"),
    _case("experiment-numbers", 'name = "s"\nexperiment = [1]\n', "experiment #1: Input should be a valid dictionary"),
    _case("description-list", 'description = ["a"]\n' + GOOD, "description"),
    _case("claim-string", 'claim = "a is best"\n' + GOOD, "claim"),
    _case("claim-checks-string", GOOD + '\n[[claim]]\nname = "c"\ntext = "t"\nchecks = "a.test > 1"\n', "claim 'c' > checks"),
    _case("note-number", "note = 5\n" + GOOD, "note"),
    _case("extends-number", 'name = "s"\nextends = 5\n', "extends must be a study name or file"),
    _case("only-string", 'name = "s"\nextends = "quick"\nonly = "exp1"\n', "only must be a list of experiment names"),
    # unknown keys
    _case("unknown-top-key", 'nmae = "x"\n' + GOOD, "did you mean 'name'?"),
    _case("unknown-experiment-key", GOOD + "hiden = 3\n", "experiment 'a' > hiden: unknown key"),
    _case("unknown-frontend-key", GOOD + 'frontend = { kind = "pca", varience = 0.9 }\n', "varience: unknown key"),
    _case("unknown-reference-key", GOOD + "reference = { tst = 90 }\n", "tst: unknown key"),
    _case("unknown-claim-key", GOOD + CLAIM.format(check='"a.test > 1"') + "margn = 1\n", "margn: unknown key"),
    _case("unknown-note-key", GOOD + '\n[[note]]\ntitle = "n"\ntext = "t"\ntxt = "t"\n', "txt: unknown key"),
    _case("unknown-every-experiment-key", 'name = "s"\nextends = "quick"\n[every_experiment]\nhiden = 3\n',
          "every_experiment.hiden: unknown key"),
    _case("unknown-frontend-kind", GOOD + 'frontend = { kind = "wavelets" }\n', "wavelets"),
    # impossible values
    _case("hidden-zero", GOOD.replace("hidden = 8", "hidden = 0"), "greater than or equal to 1"),
    _case("hidden-million", GOOD.replace("hidden = 8", "hidden = 1000000"), "less than or equal to 65536"),
    _case("l2-negative", GOOD + "l2 = -1\n", "greater than or equal to 0"),
    _case("learning-rate-zero", GOOD + "learning_rate = 0\n", "greater than 0"),
    _case("learning-rate-negative", GOOD + "learning_rate = -0.1\n", "greater than 0"),
    _case("learning-rate-inf", GOOD + "learning_rate = inf\n", "learning_rate is inf; numbers in a study must be finite"),
    _case("learning-rate-nan", GOOD + "learning_rate = nan\n", "learning_rate is nan"),
    _case("learning-rate-minus-inf", GOOD + "learning_rate = -inf\n", "learning_rate is -inf"),
    _case("l2-plus-inf", GOOD + "l2 = +inf\n", "l2 is inf"),
    _case("reference-nan", GOOD + "reference = { train = nan }\n", "reference > train is nan"),
    _case("claim-margin-inf", GOOD + CLAIM.format(check='"a.test > 1"') + "margin = inf\n", "margin is inf"),
    _case("max-epochs-zero", GOOD.replace("max_epochs = 1", "max_epochs = 0"), "experiment 'a' > max_epochs"),
    _case("patience-zero", GOOD + "patience = 0\n", "experiment 'a' > patience"),
    _case("validation-middle", GOOD + 'validation = "middle"\n', "'last' or 'first'"),
    _case("validation-size-zero", GOOD.replace("validation_size = 10", "validation_size = 0"),
          "experiment 'a' > validation_size"),
    _case("batch-size-zero", GOOD + "batch_size = 0\n", "experiment 'a' > batch_size"),
    _case("batch-size-huge", GOOD + "batch_size = 1000000000000\n", "less than or equal to 1048576"),
    _case("train-size-zero", GOOD + "train_size = 0\n", "experiment 'a' > train_size"),
    _case("pca-variance-two", GOOD + 'frontend = { kind = "pca", variance = 2.0 }\n', "variance"),
    _case("forest-no-pixels", GOOD + 'frontend = { kind = "forest_pixels", n_pixels = 0 }\n', "n_pixels"),
    _case("reference-over-100", GOOD + "reference = { train = 101 }\n", "less than or equal to 100"),
    _case("name-with-slash", GOOD.replace('name = "s"', 'name = "../escape"'), "name: String should match pattern"),
    _case("experiment-name-space", GOOD.replace('name = "a"', 'name = "a b"'), "experiment 'a b' > name"),
    _case("no-experiments", 'name = "s"\nexperiment = []\n', "at least 1 item"),
    _case("duplicate-names", GOOD + GOOD.split("\n\n", 1)[1], "experiment names must be unique"),
    _case("validation-size-beyond-data", GOOD.replace("validation_size = 10", "validation_size = 1000000"),
          "does not fit this dataset"),
    _case("train-size-beyond-data", GOOD + "train_size = 1000000\n", "does not fit this dataset"),
    # claims and notes
    _case("claim-bad-grammar", GOOD + CLAIM.format(check='"a.test >> 1"'), "unknown operator '>>'"),
    _case("claim-unknown-experiment", GOOD + CLAIM.format(check='"zz.test > 1"'), "unknown experiment(s) in claims"),
    _case("claim-number-too-large", GOOD + CLAIM.format(check='"a.test > ' + "9" * 400 + '"'), "is too large"),
    _case("claim-unknown-split", GOOD + CLAIM.format(check='"a.tset > 1"'), "unknown split 'tset'"),
    _case("note-bad-show", GOOD + '\n[[note]]\ntitle = "n"\ntext = "t"\nshow = ["pattern"]\n', "is not one of"),
    # enormous studies: refused before anything is built
    _case("million-experiments", lambda: experiments(1_000_000), "a study file may have at most"),
    _case("sweep-of-101000-experiments", lambda: GOOD + "[[sweep]]\n[sweep.vary]\nhidden = [" + ", ".join(map(str, range(1, 1001)))
          + "]\nl2 = [" + ", ".join(str(i / 1000) for i in range(101)) + "]\n", "add `large_sweep = true`"),
    _case("two-megabytes-of-comments", lambda: GOOD + ("# padding " * 100 + "\n") * 2100, "a study file may have at most"),
    # runaway nesting
    _case("nested-arrays-10000", lambda: nested_arrays(10_000), "nested too deeply"),
    _case("nested-arrays-400", lambda: nested_arrays(400), "experiment 'a' > title nests arrays or tables more than 16"),
    _case("nested-arrays-20", lambda: nested_arrays(20), "more than 16 levels deep"),
    _case("nested-tables-10000", lambda: nested_tables(10_000), "nested too deeply"),
    _case("nested-tables-20", lambda: nested_tables(20), "more than 16 levels deep"),
    # extends that goes nowhere or in circles
    _case("extends-itself", 'name = "s"\nextends = "study.toml"\n', "which extends it back"),
    _case("extends-cycle-of-two", 'name = "s"\nextends = "b.toml"\n', "which extends it back",
          {"b.toml": 'name = "b"\nextends = "study.toml"\n'}),
    _case("extends-cycle-of-three", 'name = "s"\nextends = "b.toml"\n', "which extends it back",
          {"b.toml": 'name = "b"\nextends = "c.toml"\n', "c.toml": 'name = "c"\nextends = "b.toml"\n'}),
    _case("extends-missing", 'name = "s"\nextends = "nowhere.toml"\n', "no study 'nowhere.toml'"),
    _case("extends-typo", 'name = "s"\nextends = "papr"\n', "did you mean 'paper'?"),
    _case("extends-binary", 'name = "s"\nextends = "base.toml"\n', "is not a study file: TOML is UTF-8 text",
          {"base.toml": b"\x7fELF\x02\x01\x01\xff"}),
    _case("extends-folder", 'name = "s"\nextends = "."\n', "no such file"),
    _case("extends-bad-toml", 'name = "s"\nextends = "b.toml"\n', "b.toml is not valid TOML", {"b.toml": "name = \n"}),
    _case("extends-base-inf", 'name = "s"\nextends = "b.toml"\n', "b.toml: experiment 'a' > l2 is inf",
          {"b.toml": GOOD + "l2 = inf\n"}),
    _case("only-without-extends", 'only = ["a"]\n' + GOOD, "only make sense with `extends"),
    _case("only-unknown", 'name = "s"\nextends = "quick"\nonly = ["exp99"]\n', "which the base study does not have"),
    # not a study file at all
    _case("not-toml", "this is not = = toml\n", "is not valid TOML"),
    _case("not-utf8", lambda: b'name = "\xff\xfe"\n', "is not a study file: TOML is UTF-8 text"),
    _case("empty-file", "", "is empty: a study needs at least a `name`"),
    _case("byte-order-mark", lambda: ("\ufeff" + GOOD).encode(), "is not valid TOML"),
    Case("study-is-a-folder", "study", _directory, "no such file"),
    Case("study-missing", "study", _missing, "no study"),
]
