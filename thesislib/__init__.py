"""thesislib: continuous representations for accelerating deep neural networks.

Code behind the MIPT master's thesis «Непрерывные представления для акселерации
глубоких нейронных сетей». Submodules are imported lazily by their users
(``thesislib.continuous``, ``thesislib.pruning``, ``thesislib.capacity`` ...),
so ``import thesislib`` stays cheap.
"""

__version__ = "0.1.0"
