"""DeepGame (paper 003): the maximum safe radius as a game on the tau-grid of an input.

The game (``game.py``) is kept apart from the algorithms that play it (``astar.py``,
``exhaustive.py``); feature partitions live in ``features.py``; sound Lipschitz constants of the
margin in ``lipschitz.py``. Status: the cooperative game with its admissible A* lower bound and an
exhaustive solver for toys; MCTS upper bounds, alpha-beta for feature robustness and the backend
that runs them from specs are still to come (issue 5).
"""
