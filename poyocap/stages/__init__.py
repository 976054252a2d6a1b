"""One function per notebook stage: config in, cached artifacts + tables out.

The notebooks and the command line (``python -m poyocap``) both call these, so there is one code path.
Every table written here names its data source and scale in its header; figures fed by synthetic data
carry the "SYNTHETIC DATA" stamp. Layout and contracts: ``docs/architecture.md``.

- :mod:`.common`: config from notebook parameters, table headers, recordings, artifact directories;
- :mod:`.data` (00-01), :mod:`.filtering` (02), :mod:`.pretrain` (03), :mod:`.finetune` (04-05),
  :mod:`.results` (the main table), :mod:`.ablations` (06), :mod:`.analyses` (07).
"""

from .ablations import AblationStage, ablation_stage, ablation_table, save_ablation_table
from .analyses import AnalysesStage, analyses_stage, save_analyses_table
from .common import (artifact_dir, is_cached, keep_every, load_cached, load_recordings, make_config, parse_seeds,
                     setup_notebook,
                     source_label, subsample, table_header)
from .data import DataStage, config_table, data_stage, environment_report, sessions_table
from .filtering import FilteringStage, filtering_comparison, filtering_stage, load_partition, partition_path
from .finetune import FinetuneStage, finetune_stage, run_method, time_shuffled
from .pretrain import (PretrainRun, PretrainStage, evaluate_pretraining, pretrain_data, pretrain_stage,
                       pretraining_checks, pretraining_verdicts)
from . import realism
from .realism import OwnData, Realism, own_data_stage, realism_stage
from .results import headline, main_table

__all__ = [
    "artifact_dir", "is_cached", "keep_every", "load_cached", "load_recordings", "make_config", "parse_seeds", "setup_notebook",
    "source_label",
    "subsample", "table_header", "DataStage", "config_table", "data_stage", "environment_report", "sessions_table",
    "FilteringStage", "filtering_comparison", "filtering_stage", "load_partition", "partition_path",
    "FinetuneStage", "finetune_stage", "run_method", "time_shuffled", "PretrainRun", "PretrainStage",
    "evaluate_pretraining", "pretrain_data", "pretrain_stage", "pretraining_checks", "pretraining_verdicts",
    "headline", "main_table", "AblationStage", "ablation_stage", "ablation_table", "save_ablation_table",
    "AnalysesStage", "analyses_stage", "save_analyses_table", "Realism", "realism_stage", "OwnData", "own_data_stage",
]
