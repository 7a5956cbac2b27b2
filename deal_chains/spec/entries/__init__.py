"""Reward entries of the spec language, one module per reward family: ``text`` (keywords,
length, regex), ``json_schema``, ``model_backed`` (classifier, reward_model, judge, harmless),
``plugin``, ``compose`` (all_of, any_of, threshold, gated, normalize); ``common`` holds what
they share and ``registry`` the ``REWARD_TYPES`` table and the ``RewardEntry`` model.
"""
