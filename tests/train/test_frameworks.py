"""TensorFlow (MultiWorkerMirroredStrategy) and XGBoost (distributed) jobs through raymlp."""

from __future__ import annotations

import numpy as np
import pytest

from raymlp import tracking, train

pytestmark = [pytest.mark.slow]


def test_xgboost_two_workers_reach_auc(ray_session, examples_path):
    import train_xgboost
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    result = train.TrainJob(
        loop=train_xgboost.xgboost_loop, framework="xgboost", name="xgb-test",
        scaling=train.Scaling(workers=2), config={"max_depth": 3, "eta": 0.3, "rounds": 20},
        checkpointing=train.Checkpointing(every=10, keep=1),
    ).run()

    assert len(result.history) == 20
    assert result.metrics["val_auc"] >= 0.95
    booster = result.load_model()
    assert isinstance(booster, xgb.Booster)
    assert booster.num_boosted_rounds() == 20
    _, x_val, _, y_val = train_xgboost.cancer_split()
    assert roc_auc_score(y_val, booster.predict(xgb.DMatrix(x_val))) >= 0.95
    pyfunc = tracking.load_model(result.model_uri)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x_val[:20])).ravel(),
                               booster.predict(xgb.DMatrix(x_val[:20])), rtol=1e-6)


def test_tensorflow_two_workers_improve_over_epochs(ray_session, examples_path):
    import train_tensorflow

    result = train.TrainJob(
        loop=train_tensorflow.tensorflow_loop, framework="tensorflow", name="keras-test",
        scaling=train.Scaling(workers=2),
        config={"lr": 3e-3, "hidden": 64, "batch_size": 32, "epochs": 4},
    ).run()

    acc = [h["val_accuracy"] for h in result.history]
    assert len(acc) == 4
    assert acc[-1] > acc[0] + 0.05, acc
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    run = tracking.get_run(result.run_id)
    assert run.data.params["raymlp.backend"] == "MultiWorkerMirroredStrategy"
    assert result.model_uri is not None
