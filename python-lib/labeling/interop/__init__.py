"""Label Studio interop: the ML-backend protocol both ways, annotation events, file formats.

- `labelstudio`: Label Studio's shapes (label_config, tasks, annotations, predictions);
- `ml_backend`: every classification webapp answers `/api/v1/ml-backends/<webapp>/...`;
- `ml_client`: calling any Label Studio ML backend (the ml-backend-predict recipe, the
  ml-backend-notify step);
- `events`: the ANNOTATION_* webhook payloads the engine emits;
- `formats`: `dataset import|export` of Label Studio JSON, JSON Lines and COCO.
"""
