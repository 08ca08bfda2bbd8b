"""hyper"""
