"""occvla_hf.evaluation"""
