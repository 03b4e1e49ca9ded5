"""Train a small DEQ classifier on the scikit-learn digits for a few seconds.

The hidden state z solves z = tanh(W z + U x + b); the fixed point is found with Anderson
acceleration and differentiated implicitly, so memory does not grow with solver iterations.
Run: `make demo` or `.venv/bin/python examples/quickstart.py`.
"""

import time

import torch
from sklearn.datasets import load_digits

import deqkit as dk


class Cell(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, width, bias=False)
        # A random matrix with entries of std s has spectral norm about 2·s·sqrt(width): start
        # with f contractive (norm 0.5) so the first solves converge.
        torch.nn.init.normal_(self.linear.weight, std=0.25 / width**0.5)

    def forward(self, z, x):
        return torch.tanh(self.linear(z) + x)


class DEQClassifier(torch.nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.inject = torch.nn.Linear(64, width)
        self.deq = dk.DEQ(
            Cell(width),
            solver=dk.Anderson(m=5),
            backward=dk.Implicit(tol=1e-4, max_iter=30),
            tol=1e-4,
            max_iter=30,
            on_failure="ignore",  # the loop below prints how many samples converged instead
        )
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        z, sol = self.deq(self.inject(x))
        return self.head(z), sol


def main(seconds: float = 8.0) -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x))
    train, test = perm[:1400], perm[1400:]
    model = DEQClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start, step = time.time(), 0
    while time.time() - start < seconds:
        batch = train[torch.randint(0, len(train), (128,))]
        logits, sol = model(x[batch])
        loss = torch.nn.functional.cross_entropy(logits, y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(
                f"step {step:4d}  loss {loss.item():.3f}"
                f"  forward steps {sol.nstep.float().mean():.1f}"
                f"  converged {int(sol.converged.sum())}/{len(batch)}"
                f"  max residual {sol.residual.max():.1e}  backward steps "
                f"{sol.backward.nstep.float().mean():.1f}"
            )
        step += 1
    model.eval()
    with torch.no_grad():
        logits, sol = model(x[test])
    accuracy = (logits.argmax(1) == y[test]).float().mean().item()
    print(f"test accuracy {accuracy:.3f} after {step} steps; final solve: {sol}")


if __name__ == "__main__":
    main()
