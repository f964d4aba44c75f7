"""chain/local"""
