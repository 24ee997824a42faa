# Pinned so that a plan made today means the same thing next month. Terraform >= 1.11 is
# needed for write-only arguments (secret_string_wo): the secret values never enter the state.
# The AWS provider stays on 5.x, the line this stack is validated against (5.100.0).
terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { app = var.name_prefix })
  }
}
