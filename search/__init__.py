"""Layout search: budget-legal operators, strategies behind one small interface, the
generation loop, and an evaluator that scores layouts of a model on batches."""
from . import evolution, optuna_search, pareto, random_search  # noqa: F401  (register the strategies)
from .evaluator import Evaluator
from .evolution import Evolution
from .loop import run_generations, timed
from .operators import Budget, BudgetError, LayoutOps
from .optuna_search import OptunaSearch
from .pareto import ParetoEvolution
from .random_search import RandomSearch
from .strategy import STRATEGIES, Record, SearchConfig, SearchStrategy, get_strategy, strategy_name, top_k

__all__ = [
    "Budget", "BudgetError", "Evaluator", "Evolution", "LayoutOps", "OptunaSearch", "ParetoEvolution", "RandomSearch", "Record",
    "STRATEGIES", "SearchConfig", "SearchStrategy", "get_strategy", "run_generations", "strategy_name", "timed", "top_k",
]
