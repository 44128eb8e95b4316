"""Python side of the optimizer interop test (tests/optimizer_state_test.cpp).

  optimizer_interop.py start DIR STEPS      for each optimizer: fresh model, STEPS steps,
                                            save DIR/py-start-<kind>.pt
  optimizer_interop.py continue DIR STEPS   for each optimizer: load DIR/cpp-<kind>.pt
                                            (written by C++), STEPS more steps,
                                            save DIR/py-continued-<kind>.pt

The model, data and hyper-parameters mirror the C++ test exactly.
"""
import os
import sys

import torch

KINDS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS"]


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 4)
        self.fc2 = torch.nn.Linear(4, 2)
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(((torch.arange(p.numel(), dtype=torch.float32) % 5) - 2).reshape(p.shape) / 10 + i / 100)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def data():
    x = torch.linspace(-1, 1, 24, dtype=torch.float32).reshape(8, 3)
    y = ((torch.arange(16, dtype=torch.float32) % 3) - 1).reshape(8, 2) / 2
    return x, y


def make_optimizer(kind, params):
    if kind == "SGD":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    if kind == "Adam":
        return torch.optim.Adam(params, lr=0.01, weight_decay=0.001, amsgrad=True)
    if kind == "AdamW":
        return torch.optim.AdamW(params, lr=0.01)
    if kind == "RMSprop":
        return torch.optim.RMSprop(params, lr=0.01, momentum=0.5, centered=True)
    if kind == "Adagrad":
        return torch.optim.Adagrad(params, lr=0.1, lr_decay=0.01)
    if kind == "LBFGS":
        return torch.optim.LBFGS(params, lr=0.5, max_iter=5, history_size=4)
    raise ValueError(kind)


def train(model, optimizer, steps):
    x, y = data()

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)


def main():
    command, directory, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for kind in KINDS:
        model = MLP()
        optimizer = make_optimizer(kind, model.parameters())
        if command == "start":
            out = f"py-start-{kind}.pt"
        elif command == "continue":
            checkpoint = torch.load(os.path.join(directory, f"cpp-{kind}.pt"))
            model.load_state_dict(checkpoint["model_state_dict"])
            optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
            out = f"py-continued-{kind}.pt"
        else:
            sys.exit(f"unknown command {command}")
        train(model, optimizer, steps)
        torch.save({"model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()},
                   os.path.join(directory, out))
    print("python: done")


if __name__ == "__main__":
    main()
