terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Pinned: the version this recipe is validated against (tests/deploy/test_terraform.py).
      version = "= 5.100.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project = "rlchat"
      Name    = var.name
    }
  }
}
