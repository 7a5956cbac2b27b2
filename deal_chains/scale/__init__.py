"""Scale-out back ends for dataset-scale generation (``deal-chains generate --engine ray``).

Ray is an optional dependency (``pip install 'deal-chains[ray]'``); it is imported only
when a function here runs."""

from deal_chains.scale.ray_data import DatasetGenerationError, RayMissingError, generate_dataset, resolve_inputs

__all__ = ["DatasetGenerationError", "RayMissingError", "generate_dataset", "resolve_inputs"]
