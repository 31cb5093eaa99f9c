"""A single-process digits MLP trial for `raymlp tune run examples/tune_digits.yaml`."""

from __future__ import annotations


def digits_trial(ctx) -> None:
    """Train the MLP of examples/train_digits.py in this process, one report per epoch."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    cfg = ctx.config
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xt, xv, yt, yv = train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=0,
                                      stratify=y)
    xt, xv, yt, yv = map(torch.from_numpy, (xt, xv, yt, yv))
    model = torch.nn.Sequential(torch.nn.Linear(64, cfg["hidden"]), torch.nn.ReLU(),
                                torch.nn.Linear(cfg["hidden"], 10))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(cfg["epochs"]):
        for i in range(0, len(xt), cfg["batch_size"]):
            opt.zero_grad()
            loss_fn(model(xt[i:i + cfg["batch_size"]]), yt[i:i + cfg["batch_size"]]).backward()
            opt.step()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        ctx.report({"val_accuracy": acc})
    ctx.log_model(model, input_example=xv[:5].numpy(), flavor="torch")
