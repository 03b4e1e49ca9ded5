"""``dk.citation``: the references behind exactly the configuration a model uses."""

from __future__ import annotations

from typing import Any

__all__ = ["citation"]

_REFERENCES = {
    "deq": """@inproceedings{bai2019deep,
  title={Deep Equilibrium Models},
  author={Bai, Shaojie and Kolter, J. Zico and Koltun, Vladlen},
  booktitle={Advances in Neural Information Processing Systems},
  year={2019}
}""",
    "anderson": """@article{walker2011anderson,
  title={Anderson Acceleration for Fixed-Point Iterations},
  author={Walker, Homer F. and Ni, Peng},
  journal={SIAM Journal on Numerical Analysis},
  volume={49}, number={4}, pages={1715--1735},
  year={2011}
}""",
    "broyden": """@article{broyden1965class,
  title={A Class of Methods for Solving Nonlinear Simultaneous Equations},
  author={Broyden, Charles G.},
  journal={Mathematics of Computation},
  volume={19}, number={92}, pages={577--593},
  year={1965}
}""",
    "newton_krylov": """@article{knoll2004jacobian,
  title={Jacobian-free {N}ewton--{K}rylov methods: a survey of approaches and applications},
  author={Knoll, Dana A. and Keyes, David E.},
  journal={Journal of Computational Physics},
  volume={193}, number={2}, pages={357--397},
  year={2004}
}""",
    "phantom": """@inproceedings{geng2021training,
  title={On Training Implicit Models},
  author={Geng, Zhengyang and Zhang, Xin-Yu and Bai, Shaojie and Wang, Yisen and Lin, Zhouchen},
  booktitle={Advances in Neural Information Processing Systems},
  year={2021}
}""",
    "one_step": """@inproceedings{fung2022jfb,
  title={{JFB}: Jacobian-Free Backpropagation for Implicit Networks},
  author={Fung, Samy Wu and Heaton, Howard and Li, Qiuwei and McKenzie, Daniel and Osher, Stanley
          and Yin, Wotao},
  booktitle={AAAI Conference on Artificial Intelligence},
  year={2022}
}""",
    "shine": """@inproceedings{ramzi2022shine,
  title={{SHINE}: SHaring the INverse Estimate from the forward pass for bi-level optimization
         and implicit models},
  author={Ramzi, Zaccharie and Mannel, Florian and Bai, Shaojie and Starck, Jean-Luc
          and Ciuciu, Philippe and Moreau, Thomas},
  booktitle={International Conference on Learning Representations},
  year={2022}
}""",
    "jacobian": """@inproceedings{bai2021stabilizing,
  title={Stabilizing Equilibrium Models by Jacobian Regularization},
  author={Bai, Shaojie and Koltun, Vladlen and Kolter, J. Zico},
  booktitle={International Conference on Machine Learning},
  year={2021}
}""",
}


def _name(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    return getattr(obj, "name", None)


def citation(deq: Any = None, *, solver: Any = None, backward: Any = None) -> str:
    """BibTeX for the DEQ paper plus the solver and backward a layer (or the arguments) use.

    Args:
        deq: a :class:`deqkit.DEQ` (its ``solver``, ``backward`` and Jacobian regularisation
            are read), or None.
        solver, backward: names or option objects, used when no layer is given.

    Returns:
        The BibTeX entries, separated by blank lines, without duplicates.

    >>> import deqkit as dk
    >>> text = dk.citation(solver="broyden", backward=dk.Phantom())
    >>> [line.split("{")[1].rstrip(",") for line in text.splitlines() if line.startswith("@")]
    ['bai2019deep', 'broyden1965class', 'geng2021training']
    """
    keys = ["deq"]
    if deq is not None:
        solver = getattr(deq, "solver", solver)
        backward = getattr(deq, "backward", backward)
        if getattr(deq, "jac_reg_prob", 0.0):
            keys.append("jacobian")
    for key in (_name(solver), _name(backward)):
        if key in _REFERENCES and key not in keys:
            keys.append(key)
    return "\n\n".join(_REFERENCES[k] for k in keys)
