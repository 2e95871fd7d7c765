"""occvla_hf.training"""
