"""Distributed XGBoost on scikit-learn's breast-cancer data, tracked in MLflow.

Run: python examples/train_xgboost.py
"""

from __future__ import annotations

import raymlp
from raymlp import train


def cancer_split(seed: int = 0):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)


def xgboost_loop(ctx: train.TrainContext) -> None:
    """Each worker holds a shard; XGBoost's collective joins them into one model."""
    import xgboost as xgb

    cfg = ctx.config
    x_train, x_val, y_train, y_val = cancer_split()
    xs, ys = ctx.shard(x_train, y_train)
    xv, yv = ctx.shard(x_val, y_val)
    dtrain, dval = xgb.DMatrix(xs, label=ys), xgb.DMatrix(xv, label=yv)
    state = ctx.restore()
    booster = None
    if state is not None:
        booster = xgb.Booster()
        booster.load_model(bytearray(state["model"]))

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            ctx.report({"val_auc": evals_log["val"]["auc"][-1],
                        "val_logloss": evals_log["val"]["logloss"][-1]},
                       checkpoint={"model": bytes(model.save_raw("ubj"))})
            return False

    done = ctx.start_epoch
    booster = xgb.train(
        {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"],
         "max_depth": cfg["max_depth"], "eta": cfg["eta"], "tree_method": "hist", "nthread": 1},
        dtrain, num_boost_round=cfg["rounds"] - done, evals=[(dval, "val")],
        xgb_model=booster, callbacks=[Report()], verbose_eval=False)
    ctx.log_model(booster, input_example=x_val[:5])


def main() -> None:
    raymlp.init()
    result = train.TrainJob(
        loop=xgboost_loop, framework="xgboost", name="cancer-xgb",
        scaling=train.Scaling(workers=2),
        config={"max_depth": 3, "eta": 0.3, "rounds": 30},
        checkpointing=train.Checkpointing(every=10, keep=1),
    ).run()
    print(f"val_auc={result.metrics['val_auc']:.4f} rounds={len(result.history)} "
          f"model={result.model_uri}")


if __name__ == "__main__":
    main()
