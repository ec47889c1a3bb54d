"""Learning boxes (object detection): generated scenes, region proposals, the detector,
its training and evaluation (mAP with pycocotools) and the Query Sampler's box scoring."""
