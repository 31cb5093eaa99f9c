"""Tune the learning rate and width of the digits MLP (examples/train_digits.py) with ASHA, each
trial a 2-worker distributed training job, and register the best model.

Run: python examples/tune_digits.py [--trials 4] [--epochs 6]
Uses the embedded default: a local Ray instance and an MLflow store under ./.raymlp.
The same experiment as a Katib-style file: examples/tune_digits.yaml (`raymlp tune run`).
"""

from __future__ import annotations

import argparse

from train_digits import digits_loop

import raymlp
from raymlp import train, tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--register", default="digits-tuned", help="registered model name")
    args = parser.parse_args()

    raymlp.init()
    job = train.TrainJob(loop=digits_loop, framework="torch", name="digits-trial",
                         scaling=train.Scaling(workers=args.workers),
                         config={"batch_size": 32, "epochs": args.epochs})
    exp = tune.Experiment(
        trial=job, name="digits-asha", seed=0,
        space={"lr": tune.loguniform(1e-4, 3e-2), "hidden": tune.choice([32, 64, 128])},
        objective=tune.Objective(metric="val_accuracy", goal="max", target=0.99),
        algorithm="asha", algorithm_settings={"max_t": args.epochs, "grace_period": 2},
        max_trials=args.trials, parallel_trials=1, max_failed_trials=1)
    result = exp.run(resume=False)  # progress per trial, then a summary
    version = result.best.register(args.register, alias="champion")
    print(f"registered models:/{args.register}@champion (version {version.version}): "
          f"params {result.best.params}, val_accuracy={result.best.value:.4f}")


if __name__ == "__main__":
    main()
