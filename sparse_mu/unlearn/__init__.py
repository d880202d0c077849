"""One LightningModule per unlearning method, on the shared `Unlearner` base."""

from sparse_mu.unlearn.bad_teacher import BadTeacher
from sparse_mu.unlearn.base import OneShot, Unlearner, UnlearnTask
from sparse_mu.unlearn.boundary import BoundaryExpand, BoundaryShrink
from sparse_mu.unlearn.fisher import FisherForgetting, FisherForgettingBatch
from sparse_mu.unlearn.ft import FineTune
from sparse_mu.unlearn.ga import GradientAscent
from sparse_mu.unlearn.iu import InfluenceUnlearning
from sparse_mu.unlearn.l1_sparse import L1Sparse
from sparse_mu.unlearn.last_layers import LastLayersFineTune, LastLayersRetrain
from sparse_mu.unlearn.neggrad_plus import NegGradPlus
from sparse_mu.unlearn.retrain import Retrain
from sparse_mu.unlearn.rl import RandomLabels
from sparse_mu.unlearn.salun import SalUn
from sparse_mu.unlearn.scrub import SCRUB
from sparse_mu.unlearn.sfr_on import SFRon
from sparse_mu.unlearn.ssd import SelectiveSynapticDampening

__all__ = [
    "SCRUB", "BadTeacher", "BoundaryExpand", "BoundaryShrink", "FineTune", "FisherForgetting", "FisherForgettingBatch", "GradientAscent",
    "InfluenceUnlearning", "L1Sparse", "LastLayersFineTune", "LastLayersRetrain", "NegGradPlus", "OneShot", "RandomLabels", "Retrain", "SalUn",
    "SFRon", "SelectiveSynapticDampening", "UnlearnTask", "Unlearner",
]
