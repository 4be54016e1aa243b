"""Use cases that span features (a layer above the features' services): views, the API and jobs call these."""
