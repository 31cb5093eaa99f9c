"""Keras (tf-keras) on 2 workers with MultiWorkerMirroredStrategy, on scikit-learn's digits.

Run: python examples/train_tensorflow.py
"""

from __future__ import annotations

import raymlp
from raymlp import train


def tensorflow_loop(ctx: train.TrainContext) -> None:
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras  # Keras 2: its fit() supports MultiWorkerMirroredStrategy
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # The strategy must exist before any other TensorFlow op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cfg = ctx.config
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=0,
                                                      stratify=y)
    xs, ys = ctx.shard(x_train, y_train)
    options = tf.data.Options()
    # Each worker already holds its own shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = (tf.data.Dataset.from_tensor_slices((xs, ys)).shuffle(len(xs), seed=0)
          .batch(cfg["batch_size"], drop_remainder=True).with_options(options))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input(shape=(64,)),
            keras.layers.Dense(cfg["hidden"], activation="relu"),
            keras.layers.Dense(10),
        ])
        model.compile(optimizer=keras.optimizers.Adam(cfg["lr"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    ctx.restore(model=model)  # after a restart: the last checkpoint's weights
    for _ in ctx.epochs(cfg["epochs"]):
        hist = model.fit(ds, epochs=1, verbose=0)
        logits = model(x_val, training=False)
        val_loss = float(model.loss(y_val, logits))
        val_acc = float(np.mean(np.argmax(logits, axis=1) == y_val))
        ctx.report({"loss": hist.history["loss"][-1], "val_loss": val_loss,
                    "val_accuracy": val_acc}, checkpoint={"model": model})
    ctx.log_model(model, input_example=x_val[:5])


def main() -> None:
    raymlp.init()
    result = train.TrainJob(
        loop=tensorflow_loop, framework="tensorflow", name="digits-keras",
        scaling=train.Scaling(workers=2),
        config={"lr": 3e-3, "hidden": 64, "batch_size": 32, "epochs": 5},
    ).run()
    print("val_accuracy per epoch:", " ".join(f"{h['val_accuracy']:.3f}" for h in result.history))


if __name__ == "__main__":
    main()
