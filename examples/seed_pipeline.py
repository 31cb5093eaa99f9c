"""The seed's pipeline on raymlp.pipelines: preprocess -> train (a 2-worker raymlp.train job)
-> evaluate -> if the test accuracy clears the threshold: register and deploy with
raymlp.serve, then answer one request; an exit handler records the outcome whatever happened.

Run: python examples/seed_pipeline.py [--threshold 0.85] [--epochs 20] [--local] [--keep-service]
Uses the embedded default: a local Ray instance and an MLflow store under ./.raymlp. A second
run with the same arguments is all cache hits; `raymlp pipeline lineage models:/seed-cancer@champion`
walks the registered model back to its data.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

from raymlp.pipelines import (
    Dataset,
    ExitHandler,
    If,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
    PipelineTaskFinalStatus,
    component,
    pipeline,
)


@component(cpus=1, retries=1, max_age_s=7 * 24 * 3600)
def preprocess(test_size: float, seed: int, data: Output[Dataset]) -> NamedTuple(
        "Outputs", [("num_samples", int), ("num_features", int)]):
    """scikit-learn's breast-cancer data, standardized, as one CSV with a split column."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=test_size,
                                           random_state=seed, stratify=y)
    mean, std = x.iloc[train_idx].mean(), x.iloc[train_idx].std()
    frame = ((x - mean) / std).astype("float32")
    frame.columns = [f"f{i}" for i in range(frame.shape[1])]
    frame["label"] = y.astype("int64")
    frame["split"] = "train"
    frame.loc[frame.index[test_idx], "split"] = "test"
    frame.to_csv(data.path, index=False)
    data.metadata.update(rows=len(frame), test_rows=len(test_idx))
    return len(frame), x.shape[1]


@component(cpus=0)
def train_model(data: Input[Dataset], lr: float, epochs: int, model: Output[Model]) -> float:
    """A raymlp.train job with 2 workers (the step itself only coordinates: cpus=0)."""
    from raymlp import train
    from raymlp.pipelines import current_step

    def loop(ctx) -> None:  # in each of the job's workers: logistic regression under DDP
        import pandas as pd
        import torch

        cfg = ctx.config
        torch.manual_seed(0)
        frame = pd.read_csv(cfg["data"])
        rows = frame[frame["split"] == "train"]
        features = [c for c in frame.columns if c.startswith("f")]
        x = torch.tensor(rows[features].values, dtype=torch.float32)
        y = torch.tensor(rows["label"].values, dtype=torch.int64)
        x_shard, y_shard = ctx.shard(x, y)
        net = ctx.prepare_model(torch.nn.Linear(len(features), 2))
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in ctx.epochs(cfg["epochs"]):
            opt.zero_grad()
            loss = loss_fn(net(x_shard), y_shard)
            loss.backward()
            opt.step()
            with torch.no_grad():
                acc = float((net(x_shard).argmax(1) == y_shard).float().mean())
            ctx.report({"train_loss": loss.item(), "train_accuracy": acc})
        ctx.log_model(net, input_example=x[:3].numpy())

    step = current_step()
    job = train.TrainJob(
        loop=loop, framework="torch", name="seed-train",
        scaling=train.Scaling(workers=2, cpus=1),
        config={"lr": lr, "epochs": epochs, "data": data.path},
        data_hash=step.input_digests["data"], data_name="breast-cancer", data_source=data.uri)
    result = job.run(parent_run_id=step.mlflow_run_id)
    with open(model.path, "w") as fh:
        fh.write(result.model_uri)
    model.metadata.update(model_uri=result.model_uri, train_run_id=result.run_id)
    return float(result.metrics["train_accuracy"])


@component(cpus=1)
def evaluate_model(data: Input[Dataset], model: Input[Model], metrics: Output[Metrics]) -> \
        NamedTuple("Outputs", [("test_accuracy", float), ("predictions", list)]):
    """Test accuracy of the trained model, as a Metrics artifact; the first rows' predictions."""
    import numpy as np
    import pandas as pd

    from raymlp import tracking

    frame = pd.read_csv(data.path)
    test = frame[frame["split"] == "test"]
    features = [c for c in frame.columns if c.startswith("f")]
    net = tracking.load_model(model.metadata["model_uri"], flavor="torch")
    import torch

    with torch.no_grad():
        pred = net(torch.tensor(test[features].values, dtype=torch.float32)).argmax(1).numpy()
    accuracy = float(np.mean(pred == test["label"].values))
    metrics.log_metric("test_accuracy", accuracy)
    return accuracy, [int(p) for p in pred[:5]]


@component(cpus=0, retries=1)
def deploy_model(data: Input[Dataset], model: Input[Model], name: str, keep_service: bool,
                 port: int) -> list:
    """Register the model (carrying the run's lineage), serve it, answer one request."""
    import json
    import urllib.request

    import pandas as pd

    from raymlp import serve, tracking
    from raymlp.pipelines import current_step

    version = tracking.register_model(model.metadata["model_uri"], name, alias="champion",
                                      tags=current_step().lineage_tags())
    service = serve.InferenceService(name=name, model=f"models:/{name}/{version.version}",
                                     resources=serve.Resources(cpus=0.5)).deploy(port=port)
    try:
        frame = pd.read_csv(data.path)
        rows = frame[frame["split"] == "test"][[c for c in frame.columns if c.startswith("f")]]
        x = rows.values[:5].astype("float32")
        body = json.dumps({"inputs": [{"name": "input-0", "shape": list(x.shape),
                                       "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
        req = urllib.request.Request(f"{service.url}/v2/models/{name}/infer", data=body.encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        logits = answer["outputs"][0]
        width = logits["shape"][-1]
        flat = logits["data"]
        return [int(max(range(width), key=lambda j: flat[i * width + j]))
                for i in range(len(flat) // width)]
    finally:
        if not keep_service:
            service.delete()


@component(cpus=0, cache=False)
def record_outcome(status: PipelineTaskFinalStatus, report: Output[Markdown]) -> str:
    """The exit handler: what happened, whatever happened."""
    text = f"# seed pipeline\n\nrun `{status.pipeline_run_id}`: **{status.state}**\n"
    if status.error_message:
        text += f"\n{status.error_message}\n"
    with open(report.path, "w") as fh:
        fh.write(text)
    return status.state


@pipeline(name="seed")
def seed(test_size: float = 0.2, lr: float = 0.05, epochs: int = 30, threshold: float = 0.85,
         model_name: str = "seed-cancer", keep_service: bool = True, serve_port: int = 8000):
    outcome = record_outcome()
    with ExitHandler(outcome):
        pre = preprocess(test_size=test_size, seed=0)
        tr = train_model(data=pre.outputs["data"], lr=lr, epochs=epochs)
        ev = evaluate_model(data=pre.outputs["data"], model=tr.outputs["model"])
        with If(ev.outputs["test_accuracy"] > threshold):
            deploy_model(data=pre.outputs["data"], model=tr.outputs["model"], name=model_name,
                         keep_service=keep_service, port=serve_port)
    return {"test_accuracy": ev.outputs["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--local", action="store_true", help="run the steps in this process")
    parser.add_argument("--keep-service", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    run = seed.run({"threshold": args.threshold, "epochs": args.epochs,
                    "keep_service": args.keep_service},
                   mode="local" if args.local else "ray")
    deployed = run.steps.get("deploy-model") or run.steps.get("deploy_model")
    print(f"test_accuracy={run.outputs['test_accuracy']:.4f}; deploy: "
          f"{deployed.status if deployed else 'n/a'}"
          + (f", answered {deployed.outputs['Output']}" if deployed and deployed.outputs else ""))


if __name__ == "__main__":
    main()
