"""Use cases that span features (a layer above the feature services): views, the API and jobs call these."""
