"""``unimoco pipeline``: pretrain -> evaluate -> convert -> detect -> report, in one folder."""
